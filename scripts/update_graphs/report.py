"""The report being written (:class:`Report`, which sections append to) and the command that writes it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from lib.errors import UserError
from lib.results import GRAPHS, LEDGER, REPORT, atomic_write_text, writable_matrix
from scripts.update_graphs import matrix as matrix_mod
from scripts.update_graphs.figures import curves_file, plot_run_curves
from scripts.update_graphs.matrix import Matrix, state_counts
from scripts.update_graphs.sections import SECTIONS

log = logging.getLogger(__name__)


@dataclass
class Report:
    """``report.md`` of one matrix as the sections build it: its lines, and the figures drawn for it."""

    matrix: Matrix
    graphs: Path  # the matrix's graphs/ directory
    lines: list[str] = field(default_factory=list)
    drawn: int = 0  # figures drawn so far

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def heading(self, text: str, level: int = 2) -> None:
        self.add(f"{'#' * level} {text}", "")

    def image(self, alt: str, file: str) -> None:
        """A figure of ``graphs/`` in the report."""
        self.add(f"![{alt}]({GRAPHS}/{file})", "")

    def draw(self, plot: Callable[..., object], file: str, *args: object, **kwargs: object) -> object:
        """``plot(*args, graphs/file, **kwargs)``, counted when it draws (a plot may return False: nothing)."""
        drawn = plot(*args, self.graphs / file, **kwargs)
        self.drawn += drawn is not False
        return drawn

    @cached_property
    def curves(self) -> set[str]:
        """The run ids whose own curves are drawn (every run with metrics), drawn on first use."""
        return {
            run.run_id
            for run in self.matrix.runs
            if self.draw(plot_run_curves, curves_file(run), run, self.matrix.format(run))
        }

    def text(self) -> str:
        return "\n".join(self.lines)


def update_graphs(matrix_dir: Path) -> Path:
    """Write every graph and the report of ``matrix_dir``; returns the report's path."""
    matrix = matrix_mod.load(matrix_dir)
    if not matrix.runs:
        raise UserError(
            f"no runs in {matrix_dir} (no run in a {LEDGER}, no subdirectory with a config.json): run `make` first, "
            "or pass MATRIX=<dir> naming a matrix directory"
        )
    writable_matrix(matrix_dir, "update-graphs")
    report = Report(matrix, writable_matrix(matrix_dir / GRAPHS, "update-graphs"))
    log.info("matrix %s: %d runs (%s) in %s", matrix.name, len(matrix.runs), state_counts(matrix.runs), matrix_dir)
    for section in SECTIONS:
        section(report)
    log.info("%d graphs in %s", report.drawn, report.graphs)
    path = matrix_dir / REPORT
    atomic_write_text(path, report.text())
    log.info("wrote %s", path)
    return path
