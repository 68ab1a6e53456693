"""Accuracy and loss evolution: the eval metric and the train loss vs step, one curve per method and target
sparsity (the mean over seeds at the steps they share, with a band of ± one std), a figure per model and
metric. Only done runs enter."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lib.results import Run
from scripts.update_graphs.charts import mean_curve, sparsity_text
from scripts.update_graphs.figures import cell_id, new_figure, outside_legend, style_of
from scripts.update_graphs.grouping import Methods, by_cell, done_by_model
from scripts.update_graphs.numbers import MetricFormat

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report


def _panel(ax: Axes, runs: Sequence[Run], split: str, key: str, scale: float, methods: Methods) -> None:
    """Mean curves of ``key`` over the rows of ``split``, per method and target sparsity."""

    def series(run: Run) -> tuple[list[int], list[float]] | None:
        steps, values = run.series(split, key)
        return (steps, [v * scale for v in values]) if steps else None

    cells = by_cell(runs, methods, series)
    sparsities = [s for _, s in cells]
    for (method, sparsity), seeds in cells.items():
        label = f"{method} @ {sparsity_text(sparsity)} (n={len(seeds)})"
        style = style_of(methods, method, sparsities, sparsity)
        mean_curve(ax, seeds, style, label, cell_id(method, sparsity))
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)


def plot_evolution(runs: Sequence[Run], fmt: MetricFormat, methods: Methods, title: str) -> Figure:
    fig = new_figure(14, 5.2)
    ax_metric, ax_loss = fig.subplots(1, 2)
    _panel(ax_metric, runs, "eval", fmt.name, fmt.scale, methods)
    ax_metric.set_ylabel(fmt.label("eval "))
    ax_metric.set_title(f"eval {fmt.name}")
    _panel(ax_loss, runs, "train", "loss", 1.0, methods)
    ax_loss.set_ylabel("train loss (cross-entropy, nats)")
    ax_loss.set_title("train loss")
    handles, _ = ax_metric.get_legend_handles_labels()
    outside_legend(fig, handles or None, title="method @ target sparsity (seeds)")
    fig.suptitle(title)
    return fig


def add(report: Report) -> None:
    matrix, groups = report.matrix, defaultdict(list)
    for model, runs in done_by_model(matrix.runs):
        for run in runs:
            if matrix.format(run) is not None and run.metrics:
                groups[(model, matrix.metric(run))].append(run)
    if not groups:
        return
    report.heading("Accuracy and loss evolution")
    for (model, metric), runs in groups.items():
        name_suffix, suffix = report.model_suffix(model)
        title = f"{matrix.name}: eval {metric} and train loss vs step{suffix}"
        report.draw(
            plot_evolution, f"evolution-{metric}{name_suffix}", runs, matrix.formats[metric], report.methods, title
        )
        report.image(title, f"evolution-{metric}{name_suffix}")
