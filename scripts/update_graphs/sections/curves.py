"""Every run's curves overlaid: the eval metric (one figure per metric) and the train loss; each run in its
method's colour, a line style per target sparsity."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lib.results import Run
from scripts.update_graphs.figures import plot_overlay, safe_name, style_of
from scripts.update_graphs.numbers import scaled

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report


def _draw(report: Report) -> list[tuple[str, str]]:
    """Draw the overlays; (title, figure name) of each."""
    matrix, overlays = report.matrix, []
    sparsities = [r.target_sparsity or 0.0 for r in matrix.runs]

    def _style(report: Report, run: Run) -> dict:
        return style_of(report.methods, report.methods.of(run), sparsities, run.target_sparsity or 0.0)

    for metric, fmt in matrix.formats.items():
        series = []
        for run in matrix.runs:
            steps, values = run.series("eval", metric)
            if matrix.metric(run) == metric and steps:
                series.append((run.run_id, steps, scaled(values, fmt), _style(report, run)))
        if series:
            name = f"eval-{safe_name(metric)}"
            report.draw(plot_overlay, name, series, fmt.label("eval "), f"{matrix.name}: eval {metric}", marker=True)
            overlays.append((f"eval {metric}", name))
    series = [
        (run.run_id, *run.series("train", "loss"), _style(report, run))
        for run in matrix.runs
        if run.series("train", "loss")[0]
    ]
    if series:
        report.draw(plot_overlay, "train-loss", series, "train loss", f"{matrix.name}: train loss")
        overlays.append(("train loss", "train-loss"))
    return overlays


def add(report: Report) -> None:
    overlays = _draw(report)
    if overlays:
        report.heading("Training curves")
        for title, name in overlays:
            report.image(title, name)
