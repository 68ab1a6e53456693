"""How numbers are shown: mean ± sample std over seeds, and each metric's format (percentages for accuracies)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lib.results import Run

MISSING = "—"
MIB = 2**20  # bytes in a MiB: memory is shown in MiB


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1); no std for a single value."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def mean(values: Sequence[float]) -> float | None:
    """The mean, or None for no values."""
    return mean_std(values)[0] if values else None


def summary_mean(runs: Sequence[Run], key: str) -> float | None:
    """The mean of ``key`` over the runs' ``summary.json`` that record it, or None."""
    return mean([r.summary[key] for r in runs if r.summary and r.summary.get(key) is not None])


SPREAD_RULE = (
    "a difference exceeds the seed spread when |Δ| > √(s₁² + s₂²), s₁ and s₂ the sample standard deviations"
    " (ddof=1) of the two sides; with one seed on either side there is no spread to compare with"
)


@dataclass(frozen=True)
class Difference:
    """``mean(values) - mean(baseline)`` and the combined seed spread of the two (:data:`SPREAD_RULE`)."""

    delta: float
    spread: float | None  # √(s₁² + s₂²); None when a side has a single value

    @property
    def exceeds(self) -> bool | None:
        """Whether |Δ| exceeds the spread; None when there is no spread."""
        return None if self.spread is None else abs(self.delta) > self.spread

    def text(self, number: Callable[[float], str]) -> str:
        """E.g. "-8.50 (exceeds ±1.58)", "-0.50 (within ±1.58)", "-0.50 (one seed)"."""
        delta = ("+" if self.delta >= 0 else "") + number(self.delta)
        if self.spread is None:
            return f"{delta} (one seed)"
        return f"{delta} ({'exceeds' if self.exceeds else 'within'} ±{number(self.spread)})"


def difference(values: Sequence[float], baseline: Sequence[float]) -> Difference:
    (m1, s1), (m0, s0) = mean_std(values), mean_std(baseline)
    spread = None if s1 is None or s0 is None else math.hypot(s1, s0)
    return Difference(m1 - m0, spread)


@dataclass(frozen=True)
class MetricFormat:
    """How one metric is shown: accuracies-like metrics (mode "max", values in [0, 1]) as percentages."""

    name: str
    percent: bool

    @property
    def scale(self) -> float:
        return 100.0 if self.percent else 1.0

    def label(self, prefix: str = "") -> str:
        return f"{prefix}{self.name}" + (" (%)" if self.percent else "")

    def number(self, value: float | None) -> str:
        """A value in the metric's own units (a fraction for a percentage metric)."""
        if value is None:
            return MISSING
        return _num(value * self.scale, self.percent)

    def mean_std(self, values: Sequence[float]) -> str:
        mean, std = mean_std([v * self.scale for v in values])
        text = _num(mean, self.percent)
        return text if std is None else f"{text} ± {_num(std, self.percent)}"


def _num(value: float, percent: bool) -> str:
    return f"{value:.2f}" if percent else f"{value:#.4g}"  # "#": keep trailing zeros


def metric_formats(runs: Sequence[Run], metrics: dict[str, str | None]) -> dict[str, MetricFormat]:
    """One format per eval metric: a percentage when every run says "max" and every value is in [0, 1]."""
    modes: dict[str, set] = defaultdict(set)
    values: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        metric = metrics[run.run_id]
        if metric is None:
            continue
        if run.summary:
            modes[metric].add(run.summary.get("metric_mode"))
        values[metric] += [v for v in (run.final(metric), run.best(metric)[0]) if v is not None]
        values[metric] += run.series("eval", metric)[1]
    formats = {}
    for metric in sorted(values.keys() | modes.keys()):
        finite = [v for v in values[metric] if v is not None and math.isfinite(v)]
        percent = modes[metric] == {"max"} and bool(finite) and all(0.0 <= v <= 1.0 for v in finite)
        formats[metric] = MetricFormat(metric, percent)
    return formats


def fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    """``value * scale`` formatted with ``spec``, or the missing mark."""
    return MISSING if value is None else format(value * scale, spec)


def scaled(values: Sequence[float], metric: MetricFormat | None) -> list[float]:
    """Values in the units a metric is shown in."""
    scale = metric.scale if metric else 1.0
    return [v * scale for v in values]
