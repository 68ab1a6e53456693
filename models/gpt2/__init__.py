"""GPT-2 (nanoGPT layout) with attention-output gating and reciprocal attention / MLP: one value of the model
axis, ``gpt2``.

The gating axes (gate, its position and activation), the reciprocal axes and their rules live here, torch-free,
so the matrix can be planned without importing torch; :mod:`lib.matrix` collects them through the model
registry. So does ``budget``, a run's steps and tokens counted from its config (``make plan``).
"""

from __future__ import annotations

import math

from lib.budget import Budget
from lib.spec import Axis, Rule, selected

GATES = ("none", "headwise", "elementwise", "const")
GATE_POSITIONS = ("sdpa", "value")
GATE_ACTIVATION_NAMES = ("sigmoid", "ns_sigmoid")
GATE_AXES = ("attn_gate", "attn_gate_pos", "attn_gate_act")
RECIPROCAL = ("none", "exact", "lowrank")  # reciprocal attention (models/gpt2/model.py CausalSelfAttention)
RMLP = ("none", "on")  # reciprocal MLP
GPT2_ONLY = ("mlp_ratio", "mla", "reciprocal", "kv_keep", "rmlp")  # the axes below, None for other models


def _gated(cfg) -> bool:
    return any(g != "none" for g in selected(cfg, "ATTN_GATE", GATES))


AXES = (
    Axis(
        "attn_gate",
        lambda c: selected(c, "ATTN_GATE", GATES) if c.get("MODEL_GPT2") else [None],
        label=lambda v: f"{v}gate" if v and v != "none" else "",
        empty_hint="select at least one of " + ", ".join(f"ATTN_GATE_{g.upper()}" for g in GATES),
        after="model",
    ),
    Axis(
        "attn_gate_pos",
        lambda c: selected(c, "ATTN_GATE_POS", GATE_POSITIONS) if _gated(c) else [None],
        label=lambda v: f"at{v}" if v else "",
        in_id="varies",
        empty_hint="select ATTN_GATE_POS_SDPA and/or ATTN_GATE_POS_VALUE",
        after="model",
    ),
    Axis(
        "attn_gate_act",
        lambda c: selected(c, "ATTN_GATE_ACT", GATE_ACTIVATION_NAMES) if _gated(c) else [None],
        label=lambda v: v or "",
        in_id="varies",
        empty_hint="select ATTN_GATE_ACT_SIGMOID and/or ATTN_GATE_ACT_NS_SIGMOID",
        after="model",
    ),
)
AXES += (
    Axis(
        "reciprocal",
        lambda c: selected(c, "ATTN_RECIPROCAL", RECIPROCAL) if c.get("MODEL_GPT2") else [None],
        label=lambda v: f"ra{v}" if v and v != "none" else "",
        empty_hint="select at least one of ATTN_RECIPROCAL_NONE, ATTN_RECIPROCAL_EXACT, ATTN_RECIPROCAL_LOWRANK",
        after="model",
    ),
    Axis(
        "mlp_ratio",
        lambda c: list(c["GPT2_MLP_RATIOS"]) if c.get("MODEL_GPT2") else [None],
        label=lambda v: f"mlp{v:g}" if v is not None and v != 2 else "",
        empty_hint="give GPT2_MLP_RATIOS at least one ratio, e.g. 2",
        after="model",
    ),
    Axis(
        "mla",
        lambda c: list(c["GPT2_MLA_LATENTS"]) if c.get("MODEL_GPT2") else [None],
        label=lambda v: f"mla{v}" if v else "",
        empty_hint="give GPT2_MLA_LATENTS at least one size, e.g. 0",
        after="model",
    ),
    Axis(
        "kv_keep",
        lambda c: list(c["ATTN_KV_KEEP"]) if c.get("MODEL_GPT2") else [None],
        label=lambda v: f"kv{v:g}" if v is not None and v < 1 else "",
        empty_hint="give ATTN_KV_KEEP at least one share in (0, 1], e.g. 1",
        after="model",
    ),
    Axis(
        "rmlp",
        lambda c: selected(c, "MLP_RECIPROCAL", RMLP) if c.get("MODEL_GPT2") else [None],
        label=lambda v: "rmlp" if v == "on" else "",
        empty_hint="select MLP_RECIPROCAL_NONE and/or MLP_RECIPROCAL_ON",
        after="model",
    ),
)
RULES = (
    Rule(
        "attention gating is a GPT-2 axis: other models run ungated",
        applies=lambda a, c: a["model"] != "gpt2" and any(a[k] is not None for k in GATE_AXES),
        collapse=lambda a: {**a, **dict.fromkeys(GATE_AXES)},
    ),
    Rule(
        "the MLP ratio, MLA, reciprocal attention, KV pruning and the reciprocal MLP are GPT-2 axes",
        applies=lambda a, c: a["model"] != "gpt2" and any(a[k] is not None for k in GPT2_ONLY),
        collapse=lambda a: {**a, **dict.fromkeys(GPT2_ONLY)},
    ),
    Rule(
        "gate 'none' has no position or activation",
        applies=lambda a, c: a["attn_gate"] == "none" and (a["attn_gate_pos"] or a["attn_gate_act"]),
        collapse=lambda a: {**a, "attn_gate_pos": None, "attn_gate_act": None},
    ),
    Rule(
        "ATTN_NS_SIGMOID_HEADWISE_ONLY: the non-sparse sigmoid runs on headwise gates only",
        applies=lambda a, c: (
            bool(c["ATTN_NS_SIGMOID_HEADWISE_ONLY"])
            and a["attn_gate_act"] == "ns_sigmoid"
            and a["attn_gate"] != "headwise"
        ),
    ),
)


def budget(cfg, scale: float = 1.0) -> Budget:
    """``ceil(GPT2_MAX_ITERS x scale)`` steps, each of ``BATCH_SIZE x GPT2_GRAD_ACCUM`` windows of the context
    length (the size preset's, or ``GPT2_BLOCK_SIZE`` for a custom size)."""
    from models.gpt2.model import PRESETS  # with torch: only when counted, not when the registry loads this package

    size = cfg["GPT2_SIZE"]
    block = cfg["GPT2_BLOCK_SIZE"] if size == "custom" else PRESETS[size][3]
    steps = math.ceil(cfg["GPT2_MAX_ITERS"] * scale)
    return Budget(steps, tokens=steps * cfg["BATCH_SIZE"] * cfg["GPT2_GRAD_ACCUM"] * block)
