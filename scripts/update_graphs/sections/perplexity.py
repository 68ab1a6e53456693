"""Perplexity of the language models (GPT-2): the final perplexity per method and target sparsity (mean ± std
over seeds), a figure per model, and its table with each method's difference from its dense baseline. The
perplexity is the one each run's evaluation recorded, exp of the eval loss; only done runs that record one
enter, and a matrix without language models has no such section."""

from __future__ import annotations

from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from scripts.update_graphs.charts import grouped_bars
from scripts.update_graphs.figures import method_legend, new_figure
from scripts.update_graphs.grouping import Cells, Methods, by_cell, done_by_model
from scripts.update_graphs.tables import cells_table

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report

METRIC = "perplexity"
AXIS = "final perplexity (exp of the eval loss, lower is better)"


def plot_perplexity(cells: Cells, methods: Methods, title: str) -> Figure:
    fig = new_figure(10, 5.5)
    ax = fig.subplots()
    grouped_bars(ax, cells, methods)
    ax.set_ylabel(AXIS)
    ax.set_title(title)
    method_legend(fig, methods, {m for m, _ in cells})
    return fig


def add(report: Report) -> None:
    found = [
        (model, by_cell(runs, report.methods, lambda r: r.final(METRIC)))
        for model, runs in done_by_model(report.matrix.runs)
    ]
    found = [(model, cells) for model, cells in found if cells]
    if not found:
        return
    report.heading("Perplexity")
    for model, cells in found:
        name_suffix, suffix = report.model_suffix(model)
        title = f"{report.matrix.name}: final perplexity{suffix}"
        report.draw(plot_perplexity, f"perplexity{name_suffix}", cells, report.methods, title)
        report.image(title, f"perplexity{name_suffix}")
        report.add(*cells_table(cells, report.methods, "perplexity", lambda v: f"{v:#.4g}"), "")
