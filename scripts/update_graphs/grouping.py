"""Runs grouped for comparison: by method (optimizer x pruning, with its one colour in every figure), by target
sparsity (the vs-sparsity figures and tables) and by band width (the banded-MLP tables)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from matplotlib import colormaps
from matplotlib.colors import to_hex

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


def method_axes(runs: Sequence[Run]) -> list[str]:
    """The axes that name a method: optimizer and pruning, and any other axis that varies over ``runs`` except
    the model, the target sparsity and the seed (a learning rate, a band width, an AdamWPrune variant...)."""
    return [a for a in ordered_axes(runs) if a not in NOT_LINE_AXES and (a in BARE_AXES or _varying(runs, a))]


def palette(n: int) -> list[str]:
    """``n`` distinct colours: tab10 up to 10, tab20 up to 20, then evenly spaced along turbo."""
    if n <= 10:
        return [to_hex(c) for c in colormaps["tab10"].colors[:n]]
    if n <= 20:
        return [to_hex(c) for c in colormaps["tab20"].colors[:n]]
    return [to_hex(colormaps["turbo"](i / (n - 1))) for i in range(n)]


@dataclass(frozen=True)
class Methods:
    """The methods of a matrix (each combination of :func:`method_axes` values) in display order (dense
    baselines first), with one colour each: every figure colours a method the same."""

    axes: tuple[str, ...]
    colours: Mapping[str, str] = field(default_factory=dict)  # method label -> colour (hex), in display order
    baselines: Mapping[str, str] = field(default_factory=dict)  # pruned method -> its dense baseline's label

    def of(self, run: Run) -> str:
        """The method label of ``run``: "adamw magnitude", "sgd dense", "adamw magnitude lr=0.1"."""
        parts = []
        for axis in self.axes:
            value = run.axes.get(axis)
            if value is None:  # an axis that does not apply to this run (the band width of a dense run)
                continue
            if axis == "pruning" and value == DENSE:
                parts.append("dense")
            else:
                parts.append(str(value) if axis in BARE_AXES else f"{axis}={value}")
        return " ".join(parts)

    def order(self, labels: Iterable[str]) -> list[str]:
        """``labels`` in display order."""
        wanted = set(labels)
        return [m for m in self.colours if m in wanted]


def methods_of(runs: Sequence[Run]) -> Methods:
    """The methods of ``runs`` and their colours. The report computes them once, from every run (not only the
    done ones), so a method keeps its colour as runs finish."""
    unnamed = Methods(tuple(method_axes(runs)))
    keys = {unnamed.of(r): tuple(_sort_value(a, r.axes.get(a)) for a in unnamed.axes) for r in runs}
    labels = sorted(keys, key=lambda m: (keys[m], m))
    return Methods(unnamed.axes, dict(zip(labels, palette(len(labels)), strict=True)), _baselines(runs, unnamed))


def _baselines(runs: Sequence[Run], methods: Methods) -> dict[str, str]:
    """Each pruned method's dense baseline: the dense method that agrees with it on every other axis the dense
    runs set (optimizer, lr, ...; a dense run has no band width or pruning variant), else the only dense method."""
    dense = {methods.of(r): r for r in runs if r.axes.get("pruning") == DENSE}
    only = next(iter(dense)) if len(dense) == 1 else None

    def agrees(base: Run, run: Run) -> bool:
        shared = (a for a in base.axes if a not in NOT_LINE_AXES and a != "pruning")
        return all(base.axes[a] is None or run.axes.get(a) == base.axes[a] for a in shared)

    found = {}
    for run in runs:
        if run.axes.get("pruning") != DENSE:
            found[methods.of(run)] = next((m for m, base in dense.items() if agrees(base, run)), only)
    return {m: base for m, base in found.items() if base is not None}


Cells = dict[tuple[str, float], list[float]]  # (method, target sparsity) -> one value per run (seeds together)


def by_cell(runs: Iterable[Run], methods: Methods, value: Callable[[Run], Any]) -> Cells:
    """``value`` of each run per (method, target sparsity), by sparsity then method in display order; runs
    without a value or a target sparsity are left out."""
    cells: Cells = {}
    for run in runs:
        v, sparsity = value(run), run.target_sparsity
        if v is not None and sparsity is not None:
            cells.setdefault((methods.of(run), sparsity), []).append(v)
    rank = {m: i for i, m in enumerate(methods.colours)}
    return dict(sorted(cells.items(), key=lambda kv: (kv[0][1], rank[kv[0][0]])))


def done_by_model(runs: Iterable[Run]) -> list[tuple[Any, list[Run]]]:
    """The done runs per model, models sorted by name."""
    models: dict[Any, list[Run]] = defaultdict(list)
    for run in runs:
        if run.state == "done":
            models[run.axes.get("model")].append(run)
    return sorted(models.items(), key=lambda kv: str(kv[0]))


@dataclass
class SparsityGroup:
    """The done runs of one model and metric, by line (values of ``axes``) and target sparsity."""

    model: Any
    fmt: MetricFormat
    axes: list[str]
    cells: dict[tuple, dict[float, list[float]]] = field(default_factory=dict)
    methods: dict[tuple, str] = field(default_factory=dict)  # line -> its method label (:class:`Methods`)

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

    def add(self, run: Run, value: float, method: str) -> None:
        sparsity = run.target_sparsity
        if sparsity is None:
            log.info("%s: no target sparsity, left out of the vs-sparsity figure", run.run_id)
            return
        key = tuple(run.axes.get(a) for a in self.axes)
        self.cells.setdefault(key, {}).setdefault(sparsity, []).append(value)
        self.methods[key] = method

    def baseline(self, key: tuple) -> tuple | None:
        """The dense line a pruned line is compared with: the one with the same other axes (optimizer, ...),
        else the group's only dense line; None when there is neither."""
        dense = [k for k in self.cells if self.is_dense(k)]
        same = [k for k in dense if self.colour_key(k) == self.colour_key(key)]
        return same[0] if same else dense[0] if len(dense) == 1 else None


def sparsity_groups(matrix: Matrix, methods: Methods) -> list[SparsityGroup]:
    """One group per (model, metric) of the done runs with a final value. Line axes are the other axes that
    vary, plus optimizer and pruning; each line is one method of ``methods``."""
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
            group.add(run, run.final(metric), methods.of(run))
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
