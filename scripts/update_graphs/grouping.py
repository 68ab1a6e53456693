"""Runs grouped for comparison: by target sparsity (the vs-sparsity figures and tables) and by band width
(the banded-MLP tables)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lib.results import DENSE, Run
from scripts.update_graphs.matrix import Matrix
from scripts.update_graphs.numbers import MetricFormat

log = logging.getLogger(__name__)

# Axes that are not part of a line's identity: x of the vs-sparsity figures, and what seeds average over.
NOT_LINE_AXES = ("model", "target_sparsity", "seed")
# Axes named in labels by value alone; any other axis is written "name=value".
BARE_AXES = ("optimizer", "pruning")
BAND_AXES = ("fc1_band", "fc2_band")
# The axes a banded comparison spans; the others (optimizer, gate, lr, ...) pick out the baseline it is against.
BANDED_SPAN = ("pruning", *BAND_AXES, "target_sparsity", "seed")
BAND_CONFIGS = (("FC1", lambda w: (w, 0)), ("FC2", lambda w: (0, w)), ("FC1+FC2", lambda w: (w, w)))


def _sort_value(axis: str, value: Any) -> tuple:
    if axis == "pruning" and value == DENSE:
        return (0, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, value, "")
    return (2, 0, str(value))


def ordered_axes(runs: Sequence[Run]) -> list[str]:
    """Axis names in the order the configs list them."""
    names: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(run.axes))
    return list(names)


def _varying(runs: Sequence[Run], axis: str) -> bool:
    return len({str(r.axes.get(axis)) for r in runs}) > 1


@dataclass
class SparsityGroup:
    """The done runs of one model and metric, by line (values of ``axes``) and target sparsity."""

    model: Any
    fmt: MetricFormat
    axes: list[str]
    cells: dict[tuple, dict[float, list[float]]] = field(default_factory=dict)

    def row_label(self, key: tuple, skip: Iterable[str] = ()) -> str:
        parts = [
            str(v) if a in BARE_AXES else f"{a}={v}"
            for a, v in zip(self.axes, key, strict=True)
            if a not in skip and v is not None  # an axis that does not apply to this line (e.g. variant)
        ]
        return " ".join(parts)

    def colour_key(self, key: tuple) -> tuple:
        return tuple(v for a, v in zip(self.axes, key, strict=True) if a != "pruning")

    def is_dense(self, key: tuple) -> bool:
        return "pruning" in self.axes and key[self.axes.index("pruning")] == DENSE

    def pruning(self, key: tuple) -> Any:
        return key[self.axes.index("pruning")] if "pruning" in self.axes else None

    def sparsities(self) -> list[float]:
        return sorted({s for row in self.cells.values() for s in row})

    def rows(self) -> list[tuple]:
        return sorted(self.cells, key=lambda k: tuple(_sort_value(a, v) for a, v in zip(self.axes, k, strict=True)))

    def add(self, run: Run, value: float) -> None:
        sparsity = run.target_sparsity
        if sparsity is None:
            log.info("%s: no target sparsity, left out of the vs-sparsity figure", run.run_id)
            return
        key = tuple(run.axes.get(a) for a in self.axes)
        self.cells.setdefault(key, {}).setdefault(sparsity, []).append(value)


def sparsity_groups(matrix: Matrix) -> list[SparsityGroup]:
    """One group per (model, metric) of the done runs with a final value. Line axes are the other axes that
    vary, plus optimizer and pruning."""
    done: dict[tuple, list[Run]] = defaultdict(list)
    for run in matrix.runs:
        metric = matrix.metric(run)
        if run.state == "done" and metric is not None and run.final(metric) is not None:
            done[(run.axes.get("model"), metric)].append(run)
    groups = []
    for (model, metric), runs in sorted(done.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        axes = [a for a in ordered_axes(runs) if a not in NOT_LINE_AXES and (a in BARE_AXES or _varying(runs, a))]
        group = SparsityGroup(model, matrix.formats[metric], axes)
        for run in runs:
            group.add(run, run.final(metric))
        if group.cells:
            groups.append(group)
    return groups


@dataclass
class BandedGroup:
    """Dense baseline and banded runs (seeds together) that differ only in the band widths."""

    label: str  # the other varying axes, "name=value ..."; "" when the matrix has one group
    fmt: MetricFormat
    baseline: list[Run]
    banded: dict[tuple[int, int], list[Run]]  # (FC1 width, FC2 width), 0 = dense -> runs

    def widths(self) -> list[int]:
        return sorted({w for pair in self.banded for w in pair if w}, reverse=True)

    def columns(self, width: int) -> list[tuple[str, list[Run]]]:
        cells = [(name, self.banded.get(pair(width))) for name, pair in BAND_CONFIGS]
        return [("baseline", self.baseline), *((name, runs) for name, runs in cells if runs)]


def _band(run: Run) -> tuple[int, int]:
    return tuple(int(run.axes.get(a) or 0) for a in BAND_AXES)


def banded_groups(matrix: Matrix) -> list[BandedGroup]:
    """One group per eval metric and combination of the non-band axes that has banded runs."""
    relevant = [r for r in matrix.runs if r.axes.get("pruning") in ("banded", DENSE) and matrix.metric(r) is not None]
    others = [a for a in ordered_axes(relevant) if a not in BANDED_SPAN and _varying(relevant, a)]
    groups: dict[tuple, BandedGroup] = {}
    for run in relevant:
        metric, values = matrix.metric(run), tuple(run.axes.get(a) for a in others)
        label = " ".join(f"{a}={v}" for a, v in zip(others, values, strict=True) if v is not None)
        group = groups.setdefault((metric, values), BandedGroup(label, matrix.formats[metric], [], {}))
        if run.axes.get("pruning") == DENSE:
            group.baseline.append(run)
        else:
            group.banded.setdefault(_band(run), []).append(run)
    return [g for _, g in sorted(groups.items(), key=lambda kv: str(kv[0])) if g.banded]
