"""Each run's own curves (train loss and learning rate, eval metric), one figure per run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scripts.update_graphs.figures import curves_file

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report


def add(report: Report) -> None:
    if not report.curves:
        return
    report.heading("Per-run curves")
    for run in report.matrix.runs:
        if run.run_id in report.curves:
            report.heading(f"`{run.run_id}`", level=3)
            report.image(run.run_id, curves_file(run))
