"""Every run's curves overlaid: the eval metric (one figure per metric) and the train loss."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scripts.update_graphs.figures import plot_overlay, safe_name
from scripts.update_graphs.numbers import scaled

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report


def _draw(report: Report) -> list[tuple[str, str]]:
    """Draw the overlays; (title, file) of each."""
    matrix, overlays = report.matrix, []
    for metric, fmt in matrix.formats.items():
        series = []
        for run in matrix.runs:
            steps, values = run.series("eval", metric)
            if matrix.metric(run) == metric and steps:
                series.append((run.run_id, steps, scaled(values, fmt)))
        if series:
            file = f"eval-{safe_name(metric)}.png"
            report.draw(plot_overlay, file, series, fmt.label("eval "), f"{matrix.name}: eval {metric}", marker="o")
            overlays.append((f"eval {metric}", file))
    series = [(run.run_id, *run.series("train", "loss")) for run in matrix.runs if run.series("train", "loss")[0]]
    if series:
        report.draw(plot_overlay, "train-loss.png", series, "train loss", f"{matrix.name}: train loss")
        overlays.append(("train loss", "train-loss.png"))
    return overlays


def add(report: Report) -> None:
    overlays = _draw(report)
    if overlays:
        report.heading("Training curves")
        for title, file in overlays:
            report.image(title, file)
