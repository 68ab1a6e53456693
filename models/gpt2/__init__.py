"""GPT-2 (nanoGPT layout) with attention-output gating; one value of the model axis, gpt2."""
