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


def _gated(cfg) -> bool:
    return any(g != "none" for g in selected(cfg, "ATTN_GATE", GATES))


def _gpt2_axis(name: str, values, label, empty_hint: str) -> Axis:
    """An axis of GPT-2 matrices: ``values(cfg)`` when GPT-2 is selected, a single None otherwise (the rules below
    set it to None for the runs of other models), placed after the model."""
    return Axis(
        name, lambda c: values(c) if c.get("MODEL_GPT2") else [None], label=label, empty_hint=empty_hint, after="model"
    )


# The variants of issue 17 (docs/reciprocal.md): GPT-2 axes whose value is None for other models
VARIANT_AXES = (
    _gpt2_axis(
        "reciprocal",
        lambda c: selected(c, "ATTN_RECIPROCAL", RECIPROCAL),
        lambda v: f"ra{v}" if v and v != "none" else "",
        "select at least one of ATTN_RECIPROCAL_NONE, ATTN_RECIPROCAL_EXACT, ATTN_RECIPROCAL_LOWRANK",
    ),
    _gpt2_axis(
        "mlp_ratio",
        lambda c: list(c["GPT2_MLP_RATIOS"]),
        lambda v: f"mlp{v:g}" if v is not None and v != 2 else "",
        "give GPT2_MLP_RATIOS at least one ratio, e.g. 2",
    ),
    _gpt2_axis(
        "mla",
        lambda c: list(c["GPT2_MLA_LATENTS"]),
        lambda v: f"mla{v}" if v else "",
        "give GPT2_MLA_LATENTS at least one size, e.g. 0",
    ),
    _gpt2_axis(
        "kv_keep",
        lambda c: list(c["ATTN_KV_KEEP"]),
        lambda v: f"kv{v:g}" if v is not None and v < 1 else "",
        "give ATTN_KV_KEEP at least one share in (0, 1], e.g. 1",
    ),
    _gpt2_axis(
        "rmlp",
        lambda c: selected(c, "MLP_RECIPROCAL", RMLP),
        lambda v: "rmlp" if v == "on" else "",
        "select MLP_RECIPROCAL_NONE and/or MLP_RECIPROCAL_ON",
    ),
)
GPT2_ONLY = tuple(axis.name for axis in VARIANT_AXES)

AXES = (
    _gpt2_axis(
        "attn_gate",
        lambda c: selected(c, "ATTN_GATE", GATES),
        lambda v: f"{v}gate" if v and v != "none" else "",
        "select at least one of " + ", ".join(f"ATTN_GATE_{g.upper()}" for g in GATES),
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
    *VARIANT_AXES,
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
