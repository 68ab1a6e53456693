"""Efficiency: accuracy per 100 MiB of peak memory, per method and target sparsity (mean ± std over seeds),
ranked, a figure per model. Each run's score is its final metric (%) / (its peak memory / 100 MiB), the peak the
GPU-memory bars show; only percentage metrics (accuracy) have a score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from lib.results import Run
from scripts.update_graphs.charts import ranked, ranked_bars, sparsity_text
from scripts.update_graphs.figures import method_legend, new_figure
from scripts.update_graphs.grouping import Cells, Methods, by_cell
from scripts.update_graphs.memory import Measure, peak_measure
from scripts.update_graphs.numbers import MetricFormat
from scripts.update_graphs.tables import md_table, mean_std_text

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report

PER_MIB = 100  # the score's memory unit: accuracy per this many MiB


def scores(runs: Sequence[Run], measure: Measure, fmt: MetricFormat, methods: Methods) -> Cells:
    def score(run: Run) -> float | None:
        final, peak = run.final(fmt.name), measure.of(run)
        return None if final is None or not peak else final * fmt.scale / (peak / PER_MIB)

    return by_cell(runs, methods, score)


def axis_label(fmt: MetricFormat) -> str:
    return f"{fmt.name} per {PER_MIB} MiB of peak memory (% / {PER_MIB} MiB)"


def plot_efficiency(cells: Cells, fmt: MetricFormat, methods: Methods, title: str) -> Figure:
    fig = new_figure(10, 1.8 + 0.42 * len(cells))
    ax = fig.subplots()
    ranked_bars(ax, cells, methods)
    ax.set_xlabel(axis_label(fmt))
    ax.set_ylabel("method @ target sparsity")
    ax.set_title(title)
    method_legend(fig, methods, {m for m, _ in cells})
    return fig


def ranking_table(cells: Cells) -> list[str]:
    rows = [
        [rank, method, sparsity_text(sparsity), len(values), mean_std_text(values, lambda v: f"{v:.2f}")]
        for rank, ((method, sparsity), values) in enumerate(ranked(cells), start=1)
    ]
    return md_table(["rank", "method", "target sparsity", "seeds", "score (mean ± std)"], rows)


def add(report: Report) -> None:
    for runs, name_suffix, suffix in report.per_model("Efficiency"):
        measure, fmt = peak_measure(runs), report.matrix.format(runs[0])
        if fmt is None or not fmt.percent:
            metric = fmt.name if fmt else "no metric"
            report.add(
                f"Not scored{suffix}: the score needs a percentage metric (accuracy), these runs report {metric}.", ""
            )
            continue
        if measure is None:
            report.not_measured(f"efficiency{suffix}: no summary.json of these runs records a peak")
            continue
        cells = scores(runs, measure, fmt, report.methods)
        title = f"{report.matrix.name}: {fmt.name} per {PER_MIB} MiB of peak memory{suffix}"
        report.draw(plot_efficiency, f"efficiency{name_suffix}", cells, fmt, report.methods, title)
        report.image(title, f"efficiency{name_suffix}")
        report.add(f"Score: final {fmt.name} (%) / ({measure.label} / {PER_MIB} MiB); highest first.", "")
        report.add(*ranking_table(cells), "")
