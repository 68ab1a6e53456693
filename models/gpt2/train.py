"""GPT-2 entrypoint: builds the model (size preset or custom, gating from the run's axes), gets its text as
llm.c ``.bin`` shards (:mod:`lib.data.corpora`: downloaded and tokenised once), and hands model and
:class:`~lib.tasks.LanguageModeling` task to the shared training loop. Started by the runner as
``python -m models.gpt2.train --run-dir DIR``."""

from __future__ import annotations

import logging

import torch
from torch import nn

from lib.data.corpora import CORPORA
from lib.data.shards import read_shard
from lib.data.text import TOKENIZERS
from lib.errors import UserError
from lib.tasks import ConcatTokens, LanguageModeling
from lib.training import RunContext, run_training
from models.gpt2.model import GPT2, PRESETS, GPT2Config, causal_leak, padded_vocab

logger = logging.getLogger(__name__)

SIZES = (*PRESETS, "custom")
# As `make sample`'s defaults (scripts/sample.py), so training samples read like the report's
SAMPLE_SEED, SAMPLE_TEMPERATURE, SAMPLE_TOP_K = 0, 0.8, 200


class TrainingSampler:
    """GPT2_SAMPLE_INTERVAL: the model being trained continues a prompt every ``every`` steps. Sampling draws
    from a generator of its own, seeded the same each time, so training's random numbers do not change (a run
    with samples trains exactly as one without) and samples differ only through the weights."""

    def __init__(self, tokenizer, prompt: str, tokens: int, every: int) -> None:
        self.tokenizer, self.prompt, self.tokens, self.every = tokenizer, prompt, tokens, every
        self.start = [tokenizer.eot, *tokenizer.encode(prompt)]

    def __call__(self, model: GPT2, step: int) -> dict:
        """The samples.jsonl row of ``step``: step, prompt and text (the prompt included)."""
        device = next(model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(SAMPLE_SEED)
        was_training = model.training
        model.eval()
        idx = torch.tensor([self.start], device=device)  # (1, T)
        ids = model.generate(idx, self.tokens, SAMPLE_TEMPERATURE, SAMPLE_TOP_K, generator=generator)
        model.train(was_training)
        text = self.prompt + self.tokenizer.decode(ids[0, len(self.start) :].tolist())
        return {"step": step, "prompt": self.prompt, "text": text}


def model_config(cfg, axes: dict, vocab: int) -> GPT2Config:
    size = cfg["GPT2_SIZE"]
    if size == "custom":
        n_layer, n_head, n_embd, block = (cfg[f"GPT2_{k}"] for k in ("N_LAYER", "N_HEAD", "N_EMBD", "BLOCK_SIZE"))
        if n_embd % n_head:
            raise UserError(
                f"GPT2_N_EMBD={n_embd} is not a multiple of GPT2_N_HEAD={n_head}; "
                'pick sizes where it is (e.g. make SET="GPT2_N_EMBD=128 GPT2_N_HEAD=4")'
            )
    else:
        n_layer, n_head, n_embd, block = PRESETS[size]
    rank = cfg.get("ATTN_RECIPROCAL_RANK")
    if axes.get("reciprocal") == "lowrank" and not rank < n_embd // n_head:
        raise UserError(
            f"ATTN_RECIPROCAL_RANK={rank} is not below the head dimension {n_embd // n_head} (n_embd {n_embd} / "
            f"n_head {n_head}): pick r < {n_embd // n_head}, or select ATTN_RECIPROCAL_EXACT for the full term"
        )
    if axes.get("mla") and axes.get("attn_gate") not in (None, "none") and axes.get("attn_gate_pos") == "value":
        raise UserError(
            f"GPT2_MLA_LATENTS={axes['mla']} with value gating (ATTN_GATE_POS_VALUE): MLA recomputes past values from "
            "the latent, ungated; gate the SDPA output (ATTN_GATE_POS_SDPA) or exclude these runs (MATRIX_EXCLUDE)"
        )
    return GPT2Config(
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        block_size=block,
        vocab_size=padded_vocab(vocab),
        dropout=cfg["GPT2_DROPOUT"],
        bias=cfg["GPT2_BIAS"],
        attn_gate=axes.get("attn_gate") or "none",
        attn_gate_pos=axes.get("attn_gate_pos") or "sdpa",
        attn_gate_act=axes.get("attn_gate_act") or "sigmoid",
        reciprocal=axes.get("reciprocal") or "none",
        ra_rank=cfg.get("ATTN_RECIPROCAL_RANK") or GPT2Config.ra_rank,
        ra_per_head=bool(cfg.get("ATTN_RECIPROCAL_PER_HEAD")),
        rmlp_fraction=cfg["MLP_RECIPROCAL_FRACTION"] if axes.get("rmlp") == "on" else 0.0,
        kv_keep=axes.get("kv_keep") or 1.0,
        mlp_ratio=axes.get("mlp_ratio") or 2.0,
        mla_latent=axes.get("mla") or 0,
    )


def build(ctx: RunContext) -> tuple[nn.Module, LanguageModeling]:
    cfg = ctx.cfg
    tokenizer = TOKENIZERS[cfg["GPT2_TOKENIZER"]]
    train, val = CORPORA[cfg["GPT2_DATASET"]](cfg).shards(ctx.data_dir, cfg["GPT2_TOKENIZER"])
    model_cfg = model_config(cfg, ctx.spec.axes, tokenizer.vocab_size)
    model = GPT2(model_cfg)
    leak = causal_leak(model, min(model_cfg.block_size, 64))
    if leak != 0.0:  # before any training: a variant that reads the future would make every loss meaningless
        raise RuntimeError(f"the model is not causal: changing tokens after position t moved logits up to t by {leak}")
    logger.info(
        "GPT-2 %s: %d layers, %d heads, C=%d, T=%d, vocab %d; %.2fM parameters; gate %s",
        cfg["GPT2_SIZE"],
        model_cfg.n_layer,
        model_cfg.n_head,
        model_cfg.n_embd,
        model_cfg.block_size,
        model_cfg.vocab_size,
        model.num_params() / 1e6,
        model_cfg.attn_gate,
    )
    task = LanguageModeling(
        ConcatTokens(read_shard(p) for p in train),
        ConcatTokens(read_shard(p) for p in val),
        ctx.device,
        batch_size=cfg["BATCH_SIZE"],
        block_size=model_cfg.block_size,
        grad_accum=cfg["GPT2_GRAD_ACCUM"],
        max_iters=cfg["GPT2_MAX_ITERS"],
        eval_interval=cfg["GPT2_EVAL_INTERVAL"],
        eval_batches=cfg["GPT2_EVAL_BATCHES"],
    )
    every = cfg.get("GPT2_SAMPLE_INTERVAL") or 0
    if every:
        prompt = cfg.get("GPT2_REPORT_SAMPLE_PROMPT") or ""
        task.sampler = TrainingSampler(tokenizer(), prompt, cfg["GPT2_SAMPLE_TOKENS"], every)
    return model, task


def after_training(run_dir, stop_requested) -> None:
    """The stage after training: ``ONESHOT_AFTER_TRAINING``, :func:`scripts.prune.after_training`."""
    from scripts.prune import after_training as oneshot  # scripts.prune imports this module: not at the top

    oneshot(run_dir, stop_requested)


if __name__ == "__main__":
    run_training(build, __doc__, after=after_training)
