"""Markdown tables."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from scripts.update_graphs.grouping import Cells, Methods
from scripts.update_graphs.numbers import MISSING, SPREAD_RULE, difference, mean_std


def md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return lines


def mean_std_text(values: Sequence[float], number: Callable[[float], str]) -> str:
    """ "mean ± std" over seeds (ddof=1); the mean alone for one value."""
    mean, std = mean_std(values)
    return number(mean) if std is None else f"{number(mean)} ± {number(std)}"


def cells_table(cells: Cells, methods: Methods, quantity: str, number: Callable[[float], str]) -> list[str]:
    """One row per (method, target sparsity): the seeds, ``quantity``'s mean ± std over them, and the difference
    from the method's dense baseline with whether it exceeds the seeds' spread; then the rule, stated."""
    rows = []
    for (method, sparsity), values in cells.items():
        dense = cells.get((methods.baselines.get(method), 0.0))
        delta = MISSING if dense is None else difference(values, dense).text(number)
        rows.append([method, f"{100 * sparsity:g}%", len(values), mean_std_text(values, number), delta])
    header = ["method", "target sparsity", "seeds", quantity, "Δ vs dense baseline"]
    return [*md_table(header, rows), "", f"Mean ± sample std over seeds; Δ: mean − the baseline's mean; {SPREAD_RULE}."]
