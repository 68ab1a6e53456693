"""Final metric vs target sparsity, every method on one figure (a figure per model and metric; the dense
baselines as reference lines), a table of mean ± std over seeds, and a table of each pruned method's difference
from its dense baseline, with whether it exceeds the seeds' spread. Only done runs enter."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scripts.update_graphs.figures import plot_vs_sparsity, safe_name
from scripts.update_graphs.grouping import SparsityGroup, sparsity_groups
from scripts.update_graphs.numbers import MISSING, SPREAD_RULE, difference
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


def difference_table(group: SparsityGroup) -> list[str]:
    """Rows: the pruned lines that have a dense baseline; columns: target sparsities; cells: the difference of
    the means from the baseline's, and whether it exceeds the seeds' spread. [] when no line has a baseline."""
    sparsities = [s for s in group.sparsities() if s > 0]
    rows = []
    for key in group.rows():
        base = None if group.is_dense(key) else group.baseline(key)
        if base is None:
            continue
        dense = [v for vs in group.cells[base].values() for v in vs]
        cells = [
            difference(group.cells[key][s], dense).text(lambda v: f"{v * group.fmt.scale:.2f}")
            if s in group.cells[key]
            else MISSING
            for s in sparsities
        ]
        rows.append([group.methods[key], group.methods[base], *cells])
    if not rows:
        return []
    header = ["method", "baseline", *(f"{100 * s:g}%" for s in sparsities)]
    note = f"Cells: Δ final {group.fmt.label()} (mean − the dense baseline's mean over its seeds); {SPREAD_RULE}."
    return [*md_table(header, rows), "", note]


def add(report: Report) -> None:
    matrix, groups = report.matrix, sparsity_groups(report.matrix, report.methods)
    several = matrix.several_models
    names = []
    for group in groups:
        suffix = f"-{safe_name(group.model)}" if several else ""
        name = f"{safe_name(group.fmt.name)}-vs-sparsity{suffix}"
        title = f"{matrix.name}: final {group.fmt.name} vs target sparsity" + (f" — {group.model}" if several else "")
        report.draw(plot_vs_sparsity, name, group, title, report.methods)
        names.append(name)
    if not groups:
        log.info("no done run with a final metric yet: no vs-sparsity figure")
        return
    report.heading("Final metric vs target sparsity")
    for name in names:
        report.image(name, name)
    report.heading("Sparsity")
    for group in groups:
        model = f" — {group.model}" if several else ""
        report.heading(f"final {group.fmt.label()}{model}", level=3)
        report.add(*sparsity_table(group), "")
        differences = difference_table(group)
        if differences:
            report.heading(f"difference from the dense baseline{model}", level=3)
            report.add(*differences, "")
