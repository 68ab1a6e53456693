"""Final metric vs target sparsity: a figure per model and metric, and a table of mean ± std over seeds.
Only done runs enter."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scripts.update_graphs.figures import plot_vs_sparsity, safe_name
from scripts.update_graphs.grouping import SparsityGroup, sparsity_groups
from scripts.update_graphs.numbers import MISSING
from scripts.update_graphs.tables import md_table

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report

log = logging.getLogger(__name__)


def sparsity_table(group: SparsityGroup) -> list[str]:
    """Rows: the line axes; columns: target sparsities; cells: mean ± std of the final metric over seeds."""
    sparsities = group.sparsities()
    counts = {len(vs) for row in group.cells.values() for vs in row.values()}
    rows = []
    for key in group.rows():
        cells = []
        for s in sparsities:
            values = group.cells[key].get(s)
            if not values:
                cells.append(MISSING)
                continue
            text = group.fmt.mean_std(values)
            cells.append(text if len(counts) == 1 else f"{text} (n={len(values)})")
        rows.append([*(MISSING if v is None else str(v) for v in key), *cells])
    header = [*group.axes, *(f"{100 * s:g}%" for s in sparsities)]
    if len(counts) > 1:
        seeds = "over the n seeds shown"
    else:
        (n,) = counts
        seeds = f"over {n} seed{'s' if n > 1 else ''}"
    note = f"Cells: final {group.fmt.label()}, mean {seeds}"
    if max(counts) > 1:
        note += "; ± is the sample standard deviation (ddof=1)"
    return [*md_table(header, rows), "", note + "."]


def add(report: Report) -> None:
    matrix, groups = report.matrix, sparsity_groups(report.matrix)
    several = matrix.several_models
    files = []
    for group in groups:
        suffix = f"-{safe_name(group.model)}" if several else ""
        file = f"{safe_name(group.fmt.name)}-vs-sparsity{suffix}.png"
        title = f"{matrix.name}: final {group.fmt.name} vs target sparsity" + (f" — {group.model}" if several else "")
        report.draw(plot_vs_sparsity, file, group, title)
        files.append(file)
    if not groups:
        log.info("no done run with a final metric yet: no vs-sparsity figure")
        return
    report.heading("Final metric vs target sparsity")
    for file in files:
        report.image(file, file)
    report.heading("Sparsity")
    for group in groups:
        report.heading(f"final {group.fmt.label()}" + (f" — {group.model}" if several else ""), level=3)
        report.add(*sparsity_table(group), "")
