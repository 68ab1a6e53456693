"""The test matrix: a :class:`~lib.config.Config` -> the list of :class:`~lib.spec.RunSpec` it asks for.

Every axis is multi-select. The matrix is the cartesian product of the axes, then the rules (combinations
that make no sense) collapse or drop cells, each with the reason shown by ``make plan``. The generic axes
(model, optimizer, pruning, target sparsity, learning rate, seed) are here; a family adds its own axes and
rules where it lives (``AXES`` / ``RULES`` on a pruning method, an optimizer or a model package: GPT-2's gates
in ``models/gpt2``, AdamWPrune's variants with the state pruner, band widths with the banded pruner), and
this module collects them through the registries.

A run id is the axis values joined by ``-`` (``lenet5-adamw-magnitude-s0.7-seed0``); axes marked
``in_id="varies"`` appear in it only when the matrix has more than one value for them.
"""

from __future__ import annotations

import fnmatch
import itertools
from dataclasses import dataclass

from lib.config import Config
from lib.errors import UserError
from lib.model_registry import MODEL_PACKAGES, MODELS
from lib.optimizers import OPTIMIZERS
from lib.pruning import PRUNERS
from lib.spec import Axis, Rule, RunSpec


def _registry_axis(name: str, registry) -> Axis:
    symbols = ", ".join(registry.symbol(n) for n in registry.names())
    return Axis(name, registry.selected, empty_hint=f"select at least one of {symbols}")


# The generic axes; families add theirs after one of these (Axis.after).
CORE_AXES: tuple[Axis, ...] = (
    _registry_axis("model", MODELS),
    _registry_axis("optimizer", OPTIMIZERS),
    _registry_axis("pruning", PRUNERS),
    Axis(
        "target_sparsity",
        lambda c: list(c["TARGET_SPARSITIES"]) if c["PRUNING_SPARSE"] else [0.0],
        label=lambda v: f"s{v!r}" if v else "",  # shortest repr that round-trips: distinct values, distinct ids
    ),
    Axis("lr", lambda c: list(c["LEARNING_RATES"]) or [None], label=lambda v: f"lr{v!r}" if v else "", in_id="varies"),
    Axis("seed", lambda c: list(c["SEEDS"]), label=lambda v: f"seed{v}"),
)

CORE_RULES: tuple[Rule, ...] = (
    Rule(
        "pruning 'none' is dense: one run per optimizer and seed, not one per target sparsity",
        applies=lambda a, c: a["pruning"] == "none" and a["target_sparsity"] != 0.0,
        collapse=lambda a: {**a, "target_sparsity": 0.0},
    ),
)


def _families() -> list:
    """Every registered family, models first, then optimizers, then pruning methods, in registry order: each
    may declare ``AXES`` and ``RULES``."""
    unique_packages = list(dict.fromkeys(MODEL_PACKAGES.values()))
    return [*unique_packages, *(OPTIMIZERS[n] for n in OPTIMIZERS), *(PRUNERS[n] for n in PRUNERS)]


def axes() -> tuple[Axis, ...]:
    """The matrix's axes: the core ones, each followed by the axes families place after it."""
    placed: list[Axis] = []
    for core in CORE_AXES:
        placed.append(core)
        placed += [a for f in _families() for a in getattr(f, "AXES", ()) if a.after == core.name]
    return tuple(placed)


def rules() -> tuple[Rule, ...]:
    """The families' rules in registry order, then the core ones."""
    return (*(r for f in _families() for r in getattr(f, "RULES", ())), *CORE_RULES)


@dataclass
class Plan:
    runs: list[RunSpec]
    notes: list[str]  # one line per rule that fired: reason and how many cells


def expand(cfg: Config) -> Plan:
    """The cartesian product of :func:`axes`, with :func:`rules` applied, in a stable order."""
    AXES, RULES = axes(), rules()
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


def format_plan(
    plan: Plan, matrix_dir: str, columns: dict[str, str] | None = None, totals: list[str] | None = None
) -> str:
    """The runs with their axes, each rule that fired, and the count; ``columns`` adds text after each run id
    (its steps and time, :mod:`lib.estimate`), ``totals`` lines before the count."""
    lines = [f"matrix {matrix_dir}"]
    width = max((len(r.run_id) for r in plan.runs), default=0)
    for r in plan.runs:
        axes = "  ".join(f"{k}={v}" for k, v in r.axes.items() if v is not None)
        extra = f"{columns[r.run_id]}  " if columns else ""
        lines.append(f"  {r.run_id:<{width}}  {extra}{axes}")
    for note in plan.notes:
        lines.append(f"rule: {note}")
    lines += totals or []
    lines.append(f"{len(plan.runs)} run{'' if len(plan.runs) == 1 else 's'}")
    return "\n".join(lines)
