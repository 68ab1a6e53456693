"""Memory vs accuracy: one point per done run, its peak memory against its final eval metric, coloured by its
method (a marker per target sparsity), a figure per model. The peak is the one the GPU-memory bars show."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from lib.results import Run
from scripts.update_graphs.charts import sparsity_text
from scripts.update_graphs.figures import cell_id, new_figure, outside_legend, style_of
from scripts.update_graphs.grouping import Methods, by_cell
from scripts.update_graphs.memory import Measure, peak_measure
from scripts.update_graphs.numbers import MetricFormat

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report


def plot_memory_scatter(
    runs: Sequence[Run], measure: Measure, fmt: MetricFormat, methods: Methods, title: str
) -> Figure | None:
    def point(run: Run) -> tuple[float, float] | None:
        x, y = measure.of(run), run.final(fmt.name)
        return None if x is None or y is None else (x, y * fmt.scale)

    cells = by_cell(runs, methods, point)
    if not cells:
        return None
    sparsities = [s for _, s in cells]
    fig = new_figure(10, 5.5)
    ax = fig.subplots()
    for (method, sparsity), points in cells.items():
        style = style_of(methods, method, sparsities, sparsity)
        xs, ys = zip(*points, strict=True)
        label = f"{method} @ {sparsity_text(sparsity)}"
        ax.scatter(
            xs, ys, s=45, color=style["color"], marker=style["marker"], label=label, gid=cell_id(method, sparsity)
        )
    ax.set_xlabel(measure.axis_label())
    ax.set_ylabel(fmt.label("final "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    outside_legend(fig, title="method @ target sparsity")
    return fig


def add(report: Report) -> None:
    for runs, name_suffix, suffix in report.per_model("Memory vs accuracy"):
        measure, fmt = peak_measure(runs), report.matrix.format(runs[0])
        if measure is None or fmt is None:
            report.not_measured(f"memory vs accuracy{suffix}: no summary.json of these runs records a peak")
            continue
        title = f"{report.matrix.name}: {measure.label} vs final {fmt.name}{suffix}"
        if report.draw(
            plot_memory_scatter, f"memory-vs-{fmt.name}{name_suffix}", runs, measure, fmt, report.methods, title
        ):
            report.image(title, f"memory-vs-{fmt.name}{name_suffix}")
