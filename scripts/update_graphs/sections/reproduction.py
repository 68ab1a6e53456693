"""Our figures beside the published ones, in the published table's layout, for a matrix whose defconfig
reproduces a published table (:mod:`lib.published`). A grid table keeps the published rows and columns, each of
our cells (mean over the done seeds) followed by the published figure; the AdamWPrune GPT-2 table is one row
per run: Optimizer | Algorithm | Final perplexity | published | Iterations | Training time | Memory (x weights).
A cell no done run fills reads "—"; so does a published cell the publication leaves empty."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from lib.published import Cell, Table, tables_for
from lib.results import Run
from scripts.update_graphs.numbers import MISSING, mean
from scripts.update_graphs.tables import md_table

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report


def runs_of(cell: Cell, runs: Sequence[Run]) -> list[Run]:
    """The done runs that fill ``cell``."""
    return [r for r in runs if r.state == "done" and cell.matches(r.axes, r.values)]


def _mean(runs: Sequence[Run], value: Callable[[Run], float | None]) -> float | None:
    found = [v for v in (value(r) for r in runs) if v is not None]
    return mean(found) if found else None


def _number(value: float | None, spec: str) -> str:
    return MISSING if value is None else format(value, spec)


def _ours(table: Table, runs: Sequence[Run]) -> float | None:
    """Our figure of a cell in the table's unit: accuracy is recorded as a fraction, published in %."""
    value = _mean(runs, lambda r: r.final(table.metric))
    return None if value is None else value * (100.0 if table.unit == "%" else 1.0)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _memory(run: Run) -> float | None:
    counted = ((run.summary or {}).get("memory") or {}).get("counted") or {}
    value = counted.get("state_x_weights")
    return None if value is None else float(value)


def grid_lines(table: Table, runs: Sequence[Run]) -> list[str]:
    header = [table.row_header]
    for column in table.columns:
        header += [f"{column} (ours{', ' + table.unit if table.unit else ''})", "published"]
    rows = []
    for row in table.rows:
        line = [row]
        for column in table.columns:
            cell = table.cell(row, column)
            if cell is None:
                line += ["", ""]
                continue
            line += [_number(_ours(table, runs_of(cell, runs)), ".2f"), _number(cell.value, ".2f")]
        rows.append(line)
    return md_table(header, rows)


def runs_lines(table: Table, runs: Sequence[Run]) -> list[str]:
    header = ["Optimizer", "Algorithm", "Final perplexity", "published", "Iterations", "Training time"]
    header.append("Memory (× weights)")
    rows = []
    for row in table.rows:
        (cell,) = [c for c in table.cells if c.row == row]
        found = runs_of(cell, runs)
        optimizer, algorithm = row.split(" | ")
        steps = _mean(found, lambda r: (r.summary or {}).get("steps"))
        rows.append(
            [
                optimizer,
                algorithm,
                _number(_ours(table, found), ".2f"),
                _number(cell.value, ".2f"),
                MISSING if steps is None else f"{round(steps):,}",
                _duration(_mean(found, lambda r: (r.summary or {}).get("train_seconds"))),
                _number(_mean(found, _memory), ".2f"),
            ]
        )
    return md_table(header, rows)


def add(report: Report) -> None:
    tables = tables_for(report.matrix.name)
    if not tables:
        return
    report.heading("Published comparison")
    for table in tables:
        report.heading(table.title, level=3)
        lines = runs_lines if table.layout == "runs" else grid_lines
        report.add(*lines(table, report.matrix.runs), "")
        if table.layout == "runs":
            budgets = ", ".join(f"{c.row.split(' | ')[1]} {c.iterations:,}" for c in table.cells)
            report.add(f"Published iteration budgets: {budgets}.", "")
        if table.note:
            report.add(table.note, "")
        report.add(f"Published figures: {table.source}; ours: mean over the done seeds.", "")
