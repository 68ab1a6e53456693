"""GPT-2 (nanoGPT layout) with attention-output gating: one value of the model axis, ``gpt2``.

The names of the gating axes live here, torch-free, so the matrix can be planned without importing torch.
"""

GATES = ("none", "headwise", "elementwise", "const")
GATE_POSITIONS = ("sdpa", "value")
GATE_ACTIVATION_NAMES = ("sigmoid", "ns_sigmoid")
