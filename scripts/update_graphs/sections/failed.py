"""The failed runs, each with its reason."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report


def add(report: Report) -> None:
    failed = [r for r in report.matrix.runs if r.state == "failed"]
    report.heading("Failed runs")
    report.add(*([f"- `{r.run_id}`: {r.reason}" for r in failed] if failed else ["None."]))
    report.add("")
