"""Peak (GPU) memory per method: bars of the peak memory per method and target sparsity (mean ± std over seeds), a
figure per model, and its table with each method's difference from its dense baseline.

The peak is the best measure every run of the figure records (:data:`~scripts.update_graphs.memory.PEAKS`):
the device memory of the process (CUDA context included, what ``nvidia-smi`` shows), else the allocator's peak,
else the summary's ``peak_memory_bytes`` of run directories from before memory was measured; the axis says
which."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from lib.results import Run
from scripts.update_graphs.charts import grouped_bars
from scripts.update_graphs.figures import method_legend, new_figure
from scripts.update_graphs.grouping import Methods, by_cell
from scripts.update_graphs.memory import Measure, peak_measure
from scripts.update_graphs.tables import cells_table

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report


def plot_memory_bars(runs: Sequence[Run], measure: Measure, methods: Methods, title: str) -> Figure:
    fig = new_figure(10, 5.5)
    ax = fig.subplots()
    cells = by_cell(runs, methods, measure.of)
    grouped_bars(ax, cells, methods)
    ax.set_ylabel(measure.axis_label())
    ax.set_title(title)
    method_legend(fig, methods, {m for m, _ in cells})
    return fig


def add(report: Report) -> None:
    for runs, name_suffix, suffix in report.per_model("Peak memory"):
        measure = peak_measure(runs)
        if measure is None:
            report.not_measured(f"peak memory{suffix}: no summary.json of these runs records a peak")
            continue
        name = f"memory-peak{name_suffix}"
        title = f"{report.matrix.name}: {measure.label}{suffix}"
        report.draw(plot_memory_bars, name, runs, measure, report.methods, title)
        report.image(title, name)
        cells = by_cell(runs, report.methods, measure.of)
        report.add(*cells_table(cells, report.methods, measure.axis_label(), measure.number), "")
