"""The test matrix: a :class:`~lib.config.Config` -> the list of :class:`RunSpec` it asks for.

Every axis is multi-select. The matrix is the cartesian product of the axes in :data:`AXES`, then the rules
in :data:`RULES` (the one table of combinations that make no sense) collapse or drop cells, each with the
reason shown by ``make plan``. Adding an axis is one :class:`Axis` entry (plus its Kconfig symbol); adding a
rule is one :class:`Rule` entry.

A run id is the axis values joined by ``-`` (``lenet5-adamw-magnitude-s0.7-seed0``); axes marked
``in_id="varies"`` appear in it only when the matrix has more than one value for them.
"""

from __future__ import annotations

import fnmatch
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lib.config import Config
from lib.errors import UserError
from lib.optimizers import OPTIMIZERS
from lib.pruning import PRUNERS
from lib.pruning.state import VARIANTS
from models import MODELS
from models.gpt2 import GATE_ACTIVATION_NAMES, GATE_POSITIONS, GATES


@dataclass(frozen=True)
class Axis:
    name: str
    values: Callable[[Config], list]
    label: Callable[[Any], str] = str  # "" leaves the axis out of the run id for that value
    in_id: str = "always"  # or "varies"
    empty_hint: str = ""


def _registry_axis(name: str, registry) -> Axis:
    symbols = ", ".join(registry.symbol(n) for n in registry.names())
    return Axis(name, registry.selected, empty_hint=f"select at least one of {symbols}")


def _variants(cfg: Config) -> list[str]:
    """ADAMWPRUNE_VARIANTS, each checked against the registry (an unknown name lists the allowed ones)."""
    for name in cfg["ADAMWPRUNE_VARIANTS"]:
        VARIANTS[name]
    return list(cfg["ADAMWPRUNE_VARIANTS"])


def _selected(cfg: Config, prefix: str, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if cfg.get(f"{prefix}_{n.upper()}")]


def _gated(cfg: Config) -> bool:
    return any(g != "none" for g in _selected(cfg, "ATTN_GATE", GATES))


AXES: tuple[Axis, ...] = (
    _registry_axis("model", MODELS),
    Axis(
        "attn_gate",
        lambda c: _selected(c, "ATTN_GATE", GATES) if c.get("MODEL_GPT2") else [None],
        label=lambda v: f"{v}gate" if v and v != "none" else "",
        empty_hint="select at least one of " + ", ".join(f"ATTN_GATE_{g.upper()}" for g in GATES),
    ),
    Axis(
        "attn_gate_pos",
        lambda c: _selected(c, "ATTN_GATE_POS", GATE_POSITIONS) if _gated(c) else [None],
        label=lambda v: f"at{v}" if v else "",
        in_id="varies",
        empty_hint="select ATTN_GATE_POS_SDPA and/or ATTN_GATE_POS_VALUE",
    ),
    Axis(
        "attn_gate_act",
        lambda c: _selected(c, "ATTN_GATE_ACT", GATE_ACTIVATION_NAMES) if _gated(c) else [None],
        label=lambda v: v or "",
        in_id="varies",
        empty_hint="select ATTN_GATE_ACT_SIGMOID and/or ATTN_GATE_ACT_NS_SIGMOID",
    ),
    _registry_axis("optimizer", OPTIMIZERS),
    Axis(
        "variant",
        lambda c: _variants(c) if c["OPTIMIZER_ADAMWPRUNE"] else [None],
        label=lambda v: v or "",
    ),
    _registry_axis("pruning", PRUNERS),
    Axis(
        "target_sparsity",
        lambda c: list(c["TARGET_SPARSITIES"]) if c["PRUNING_SPARSE"] else [0.0],
        label=lambda v: f"s{v!r}" if v else "",  # shortest repr that round-trips: distinct values, distinct ids
    ),
    Axis(
        "fc1_band",
        lambda c: list(c["BANDED_FC1_BANDWIDTHS"]) if c.get("PRUNING_BANDED") else [None],
        label=lambda v: f"fc1b{v}" if v else "",
    ),
    Axis(
        "fc2_band",
        lambda c: list(c["BANDED_FC2_BANDWIDTHS"]) if c.get("PRUNING_BANDED") else [None],
        label=lambda v: f"fc2b{v}" if v else "",
    ),
    Axis("lr", lambda c: list(c["LEARNING_RATES"]) or [None], label=lambda v: f"lr{v!r}" if v else "", in_id="varies"),
    Axis("seed", lambda c: list(c["SEEDS"]), label=lambda v: f"seed{v}"),
)


GATE_AXES = ("attn_gate", "attn_gate_pos", "attn_gate_act")


@dataclass(frozen=True)
class Rule:
    """A combination that makes no sense: ``collapse`` rewrites the cell; without it the cell is dropped."""

    reason: str
    applies: Callable[[dict, Config], bool]  # (cell, the matrix's config)
    collapse: Callable[[dict], dict] | None = None


RULES: tuple[Rule, ...] = (
    Rule(
        "attention gating is a GPT-2 axis: other models run ungated",
        applies=lambda a, c: a["model"] != "gpt2" and any(a[k] is not None for k in GATE_AXES),
        collapse=lambda a: {**a, **dict.fromkeys(GATE_AXES)},
    ),
    Rule(
        "gate 'none' has no position or activation",
        applies=lambda a, c: a["attn_gate"] == "none" and (a["attn_gate_pos"] or a["attn_gate_act"]),
        collapse=lambda a: {**a, "attn_gate_pos": None, "attn_gate_act": None},
    ),
    Rule(
        "AdamWPrune variants apply to the adamwprune optimizer only",
        applies=lambda a, c: a["variant"] is not None and a["optimizer"] != "adamwprune",
        collapse=lambda a: {**a, "variant": None},
    ),
    Rule(
        "adamwprune prunes with its own moments: it runs with pruning 'state' only",
        applies=lambda a, c: a["optimizer"] == "adamwprune" and a["pruning"] != "state",
    ),
    Rule(
        "pruning 'state' reads AdamWPrune's moments: it runs with optimizer adamwprune only",
        applies=lambda a, c: a["pruning"] == "state" and a["optimizer"] != "adamwprune",
    ),
    Rule(
        "N:M sparsity is fixed by its pattern: (M-N)/M = 50%",
        applies=lambda a, c: a["pruning"] == "nm" and a["target_sparsity"] != 0.5,
        collapse=lambda a: {**a, "target_sparsity": 0.5},
    ),
    Rule(
        "band widths apply to pruning 'banded' only",
        applies=lambda a, c: a["pruning"] != "banded" and (a["fc1_band"] is not None or a["fc2_band"] is not None),
        collapse=lambda a: {**a, "fc1_band": None, "fc2_band": None},
    ),
    Rule(
        "banded with both widths 0 is the dense run (pruning 'none')",
        applies=lambda a, c: a["pruning"] == "banded" and not a["fc1_band"] and not a["fc2_band"],
    ),
    Rule(
        "without BANDED_FULL_GRID, FC1 and FC2 are banded together only at equal widths",
        applies=lambda a, c: (
            a["pruning"] == "banded"
            and not c.get("BANDED_FULL_GRID")
            and bool(a["fc1_band"])
            and bool(a["fc2_band"])
            and a["fc1_band"] != a["fc2_band"]
        ),
    ),
    Rule(
        "banded sparsity is set by the band widths, not by a target",
        applies=lambda a, c: a["pruning"] == "banded" and a["target_sparsity"] != 0.0,
        collapse=lambda a: {**a, "target_sparsity": 0.0},
    ),
    Rule(
        "pruning 'none' is dense: one run per optimizer and seed, not one per target sparsity",
        applies=lambda a, c: a["pruning"] == "none" and a["target_sparsity"] != 0.0,
        collapse=lambda a: {**a, "target_sparsity": 0.0},
    ),
)


@dataclass(frozen=True)
class RunSpec:
    """One cell of the matrix: its id, its axis values and the full config it runs with."""

    run_id: str
    matrix: str
    axes: dict
    cfg: Config = field(compare=False)

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id,
            "matrix": self.matrix,
            "axes": dict(self.axes),
            "values": self.cfg.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict) -> RunSpec:
        return cls(d["run_id"], d["matrix"], dict(d["axes"]), Config.from_json(d["values"]))


@dataclass
class Plan:
    runs: list[RunSpec]
    notes: list[str]  # one line per rule that fired: reason and how many cells


def expand(cfg: Config) -> Plan:
    """The cartesian product of :data:`AXES`, with :data:`RULES` applied, in a stable order."""
    axis_values = []
    for axis in AXES:
        values = axis.values(cfg)
        if not values:
            raise UserError(f"the {axis.name} axis is empty: {axis.empty_hint}; use `make menuconfig`")
        axis_values.append(values)
    varies = {a.name for a, v in zip(AXES, axis_values, strict=True) if len(v) > 1}

    cells: list[dict] = []
    fired: dict[str, int] = {}
    for combo in itertools.product(*axis_values):
        cell = {a.name: v for a, v in zip(AXES, combo, strict=True)}
        for rule in RULES:
            if rule.applies(cell, cfg):
                fired[rule.reason] = fired.get(rule.reason, 0) + 1
                cell = rule.collapse(cell) if rule.collapse else None
                if cell is None:
                    break
        if cell is not None and cell not in cells:
            cells.append(cell)

    runs = []
    excluded = dict.fromkeys(cfg.get("MATRIX_EXCLUDE") or (), 0)
    for cell in cells:
        parts = [a.label(cell[a.name]) for a in AXES if a.in_id == "always" or a.name in varies]
        run_id = "-".join(p for p in parts if p)
        hits = [pattern for pattern in excluded if fnmatch.fnmatchcase(run_id, pattern)]
        for pattern in hits:
            excluded[pattern] += 1
        if not hits:
            runs.append(RunSpec(run_id, cfg["MATRIX_NAME"], cell, cfg))
    notes = [f"{reason} ({n} cells)" for reason, n in fired.items()]
    notes += [f"MATRIX_EXCLUDE {pattern!r} ({n} run{'' if n == 1 else 's'})" for pattern, n in excluded.items()]
    unused = [pattern for pattern, n in excluded.items() if n == 0]
    if unused:
        ids = ", ".join(r.run_id for r in runs)
        raise UserError(f"MATRIX_EXCLUDE pattern {unused[0]!r} matches no run (the runs: {ids}); fix or remove it")
    if not runs:
        raise UserError("MATRIX_EXCLUDE removes every run of the matrix; narrow its patterns")
    return Plan(runs, notes)


def format_plan(plan: Plan, matrix_dir: str) -> str:
    lines = [f"matrix {matrix_dir}"]
    width = max((len(r.run_id) for r in plan.runs), default=0)
    for r in plan.runs:
        axes = "  ".join(f"{k}={v}" for k, v in r.axes.items() if v is not None)
        lines.append(f"  {r.run_id:<{width}}  {axes}")
    for note in plan.notes:
        lines.append(f"rule: {note}")
    lines.append(f"{len(plan.runs)} run{'' if len(plan.runs) == 1 else 's'}")
    return "\n".join(lines)
