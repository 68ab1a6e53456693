"""The training-memory comparison: six panels per model, bars per method and target sparsity (mean ± std over
seeds), and a table of the same numbers.

The panels, and why these six:

1. peak memory: the best measure every run records (device memory of the process, else the allocator's peak,
   else the legacy ``peak_memory_bytes``; the axis says which), what a GPU must hold;
2. peak host RSS: what the machine must hold besides, and the only measured peak of a CPU run;
3. optimizer state (counted from the tensors): where optimizers differ (SGD none or one buffer, AdamW two);
4. pruning masks (counted): what a pruning method adds (one byte per prunable weight for a bool mask);
5. training state (optimizer state + masks + the pruner's own state) as a multiple of the weight bytes: the
   published "× weights" column, comparable across model sizes;
6. the final eval metric: what the memory buys.

Parameter and gradient bytes are not panels: every method of a model has the same (the table of counted bytes
would repeat one number). Only runs whose summary.json has ``"memory"`` enter; a matrix without such runs gets a
"not measured" line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from lib.results import Run
from scripts.update_graphs.charts import grouped_bars
from scripts.update_graphs.figures import method_legend, new_figure
from scripts.update_graphs.grouping import Methods, by_cell
from scripts.update_graphs.memory import (
    MASKS,
    OPTIMIZER_STATE,
    PEAK_RSS,
    STATE_X_WEIGHTS,
    Measure,
    peak_measure,
    recorded,
)
from scripts.update_graphs.numbers import MISSING, MetricFormat
from scripts.update_graphs.tables import md_table, mean_std_text

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report


def metric_measure(fmt: MetricFormat) -> Measure:
    """The final eval metric as a panel, in the units the report shows it in."""

    def value(run: Run) -> float | None:
        final = run.final(fmt.name)
        return None if final is None else final * fmt.scale

    return Measure(fmt.name, f"final {fmt.name}", value, unit="%" if fmt.percent else "")


def panels(runs: Sequence[Run], fmt: MetricFormat | None) -> list[Measure]:
    """The six panels (five without a metric format)."""
    peak = peak_measure(runs)
    chosen = [peak, PEAK_RSS, OPTIMIZER_STATE, MASKS, STATE_X_WEIGHTS, fmt and metric_measure(fmt)]
    return [m for m in chosen if m is not None]


def plot_memory_panels(runs: Sequence[Run], measures: Sequence[Measure], methods: Methods, title: str) -> Figure:
    fig = new_figure(16, 8.5)
    for ax, measure in zip(fig.subplots(2, 3).flat, measures, strict=False):
        cells = by_cell(runs, methods, measure.of)
        if cells:
            grouped_bars(ax, cells, methods, panel=f"{measure.key}: ")
        else:
            ax.text(0.5, 0.5, "not measured by these runs", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel("target sparsity (%)")
        ax.set_title(measure.label)
        ax.set_ylabel(measure.axis_label())
    method_legend(fig, methods, {methods.of(r) for r in runs})
    fig.suptitle(title)
    return fig


def memory_table(runs: Sequence[Run], measures: Sequence[Measure], methods: Methods) -> list[str]:
    """Rows: (method, target sparsity); columns: each panel's mean ± std over seeds."""
    columns = [(m, by_cell(runs, methods, m.of)) for m in measures]
    rows = []
    for key in by_cell(runs, methods, lambda run: 0):
        cells = [mean_std_text(c[key], m.number) if key in c else MISSING for m, c in columns]
        rows.append([key[0], f"{100 * key[1]:g}%", *cells])
    return md_table(["method", "target sparsity", *(m.axis_label() for m in measures)], rows)


def add(report: Report) -> None:
    for runs, name_suffix, suffix in report.per_model("Training memory"):
        measured = [r for r in runs if recorded(r)]
        if not measured:
            report.not_measured(
                f'training memory{suffix}: no summary.json of these runs has "memory" (counted optimizer state,'
                " masks, peaks); run directories from before memory was measured"
            )
            continue
        measures = panels(measured, report.matrix.format(measured[0]))
        title = f"{report.matrix.name}: training memory{suffix}"
        report.draw(plot_memory_panels, f"memory-panels{name_suffix}", measured, measures, report.methods, title)
        report.image(title, f"memory-panels{name_suffix}")
        report.add(*memory_table(measured, measures, report.methods), "", "Mean ± sample std over seeds.", "")
