"""A table of every run: state, final and best metric, achieved sparsity, time, memory, throughput, curves."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lib.results import GRAPHS, Run
from scripts.update_graphs.figures import curves_file
from scripts.update_graphs.numbers import MISSING, MetricFormat, fmt
from scripts.update_graphs.tables import md_table

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report


def status_text(run: Run) -> str:
    """The run's state; a running run's progress in steps."""
    state = run.state
    if state == "running" and run.status.get("total_steps"):
        return f"running ({run.status.get('step', 0)}/{run.status['total_steps']})"
    return state


def _final_and_best(run: Run, metric: str | None, metric_fmt: MetricFormat | None, prefixed: bool) -> list[str]:
    """The final and best (@ step) cells; each prefixed with the metric when the table mixes metrics."""
    if metric is None or metric_fmt is None:
        return [MISSING, MISSING]
    prefix = f"{metric_fmt.label()}: " if prefixed else ""
    value = run.final(metric)
    final = MISSING if value is None else prefix + metric_fmt.number(value)
    value, step = run.best(metric)
    best = MISSING if value is None else prefix + metric_fmt.number(value) + (f" @ {step}" if step is not None else "")
    return [final, best]


def _row(report: Report, run: Run, single: MetricFormat | None) -> list[str]:
    summary = run.summary or {}
    memory = summary.get("peak_memory_bytes")
    curves = MISSING
    if run.run_id in report.curves:
        curves = f"[{report.formats[0]}]({GRAPHS}/{report.file(curves_file(run))})"
    return [
        f"`{run.run_id}`",
        status_text(run),
        *_final_and_best(run, report.matrix.metric(run), report.matrix.format(run), single is None),
        fmt(summary.get("sparsity"), ".2f", 100.0),
        fmt(summary.get("train_seconds"), ".1f"),
        fmt(None if memory is None else memory / 2**20, ".1f"),
        fmt(summary.get("throughput"), ".1f"),
        curves,
    ]


def add(report: Report) -> None:
    matrix = report.matrix
    used = sorted({m for m in matrix.metrics.values() if m is not None})
    single = matrix.formats[used[0]] if len(used) == 1 else None
    header = [
        "run",
        "status",
        single.label("final ") if single else "final",
        (single.label("best ") if single else "best") + " @ step",
        "sparsity (%)",
        "train time (s)",
        "peak memory (MiB)",
        "throughput (samples/s)",
        "curves",
    ]
    report.heading("Runs")
    report.add(*md_table(header, [_row(report, run, single) for run in matrix.runs]), "")
