"""Banded-MLP runs against their dense baseline: per band width, the eval metric at each evaluation (columns
FC1 / FC2 / FC1+FC2), then every band pair's final metric and its change vs the baseline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lib.results import Run
from scripts.update_graphs.grouping import BAND_CONFIGS, BandedGroup, banded_groups
from scripts.update_graphs.numbers import MISSING, fmt, mean
from scripts.update_graphs.tables import md_table

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report

INTRO = (
    "Validation metric at each evaluation, mean over seeds; columns are the dense baseline and FC1 / FC2 /"
    " FC1+FC2 banded at one width. Δ is relative to the baseline's final value."
)


def _summary_mean(runs: Sequence[Run], key: str) -> float | None:
    return mean([r.summary[key] for r in runs if r.summary and r.summary.get(key) is not None])


def checkpoint_table(group: BandedGroup, width: int) -> list[str]:
    """Rows: the evaluation steps; columns: baseline, FC1, FC2, FC1+FC2 at ``width``; cells: mean over seeds."""
    metric = group.fmt.name
    columns = [
        (name, [dict(zip(*r.series("eval", metric), strict=True)) for r in rs]) for name, rs in group.columns(width)
    ]
    steps = sorted({step for _, series in columns for s in series for step in s})
    rows = [
        [step, *(group.fmt.number(mean([s[step] for s in series if step in s])) for _, series in columns)]
        for step in steps
    ]
    return md_table(["step", *(name for name, _ in columns)], rows)


def _final_order(group: BandedGroup) -> list[tuple[str, tuple[int, int]]]:
    """Each width's FC1 / FC2 / FC1+FC2, then any other (FC1, FC2) pair."""
    order = [(name, pair(w)) for w in group.widths() for name, pair in BAND_CONFIGS if pair(w) in group.banded]
    listed = {pair for _, pair in order}
    return order + [(f"FC1 {a} / FC2 {b}", (a, b)) for a, b in sorted(group.banded) if (a, b) not in listed]


def final_table(group: BandedGroup) -> list[str]:
    """Baseline, then every band pair: the final metric of the done runs (mean over seeds) and its change
    relative to the baseline."""

    def finals(runs: Sequence[Run]) -> list[float]:
        return [v for r in runs if r.state == "done" and (v := r.final(group.fmt.name)) is not None]

    base = mean(finals(group.baseline))
    rows = [["baseline", "dense", "dense", fmt(_summary_mean(group.baseline, "sparsity"), ".2f", 100.0)]]
    rows[0] += [group.fmt.number(base), MISSING]
    for name, (fc1, fc2) in _final_order(group):
        runs = group.banded[(fc1, fc2)]
        value = mean(finals(runs))
        delta = MISSING if value is None or not base else f"{100 * (value - base) / base:+.2f}%"
        sparsity = fmt(_summary_mean(runs, "sparsity"), ".2f", 100.0)
        rows.append([name, fc1 or "dense", fc2 or "dense", sparsity, group.fmt.number(value), delta])
    header = ["run", "FC1 width", "FC2 width", "sparsity (%)", group.fmt.label("final "), "Δ vs baseline"]
    return md_table(header, rows)


def add(report: Report) -> None:
    groups = banded_groups(report.matrix)
    if not groups:
        return
    report.heading("Banded MLP")
    report.add(INTRO, "")
    for group in groups:
        suffix = f" — {group.label}" if group.label else ""
        for width in group.widths():
            if len(group.columns(width)) > 1:
                report.heading(f"Bandwidth {width}: eval {group.fmt.label()}{suffix}", level=3)
                report.add(*checkpoint_table(group, width), "")
        report.heading(f"Final eval {group.fmt.label()}{suffix}", level=3)
        report.add(*final_table(group), "")
