"""The report's head: the matrix's name and description, the runs per state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scripts.update_graphs.matrix import state_counts

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report


def add(report: Report) -> None:
    runs = report.matrix.runs
    descriptions = sorted({r.values.get("MATRIX_DESCRIPTION") or "" for r in runs} - {""})
    report.add(f"# Matrix `{report.matrix.name}`", "")
    report.add(*[f"> {d}\n" for d in descriptions])
    report.add(f"**{len(runs)} runs:** " + state_counts(runs), "")
    report.add(
        "Everything below is computed from the ledger and the run directories by `python -m scripts.update_graphs`;"
        " re-run it to refresh.",
        "",
    )
