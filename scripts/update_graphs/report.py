"""The report being written (:class:`Report`, which sections append to) and the command that writes it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from matplotlib.figure import Figure

from lib.errors import UserError
from lib.export import RUNS_CSV, STEPS_CSV, write_matrix_tables
from lib.results import GRAPHS, LEDGER, REPORT, atomic_write_text, writable_matrix
from scripts.update_graphs import matrix as matrix_mod
from scripts.update_graphs.figures import curves_file, plot_run_curves, safe_name, save
from scripts.update_graphs.grouping import Methods, done_by_model, methods_of
from scripts.update_graphs.html import write_html
from scripts.update_graphs.matrix import Matrix, state_counts
from scripts.update_graphs.sections import SECTIONS
from scripts.update_graphs.settings import GraphSettings

log = logging.getLogger(__name__)


@dataclass
class Report:
    """``report.md`` of one matrix as the sections build it: its lines, and the figures drawn for it."""

    matrix: Matrix
    graphs: Path  # the matrix's graphs/ directory
    formats: tuple[str, ...]  # each figure is written in each of these (GRAPH_FORMATS); the report links the first
    lines: list[str] = field(default_factory=list)
    drawn: int = 0  # figures drawn so far

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def heading(self, text: str, level: int = 2) -> None:
        self.add(f"{'#' * level} {text}", "")

    def file(self, name: str) -> str:
        """The file of figure ``name`` that the report links (in the first of the formats)."""
        return f"{name}.{self.formats[0]}"

    def image(self, alt: str, name: str) -> None:
        """Figure ``name`` of ``graphs/`` in the report."""
        self.add(f"![{alt}]({GRAPHS}/{self.file(name)})", "")

    def model_suffix(self, model: object) -> tuple[str, str]:
        """(figure-name suffix, title suffix) of a per-model figure: none when the matrix has one model."""
        if not self.matrix.several_models:
            return "", ""
        return f"-{safe_name(model)}", f" — {model}"

    def per_model(self, heading: str) -> Iterator[tuple[list, str, str]]:
        """(done runs, figure-name suffix, title suffix) for each model with done runs, under ``heading``
        (written only when there is one)."""
        models = done_by_model(self.matrix.runs)
        if models:
            self.heading(heading)
        for model, runs in models:
            yield runs, *self.model_suffix(model)

    def not_measured(self, why: str) -> None:
        """The one line a figure leaves when its runs do not record what it shows."""
        self.add(f"not measured: {why}", "")

    def draw(self, plot: Callable[..., Figure | None], name: str, *args: object, **kwargs: object) -> bool:
        """``plot(*args, **kwargs)`` written as ``graphs/<name>.<format>`` in each format; False when the plot
        had nothing to draw (it returned None)."""
        fig = plot(*args, **kwargs)
        if fig is None:
            return False
        save(fig, self.graphs / name, self.formats)
        self.drawn += 1
        return True

    @cached_property
    def methods(self) -> Methods:
        """The methods and their colours, one per method in every figure: from every run, not only the done
        ones, so a method keeps its colour as runs finish."""
        return methods_of(self.matrix.runs)

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


def update_graphs(matrix_dir: Path, settings: GraphSettings | None = None) -> Path:
    """Write every graph and the report of ``matrix_dir``; returns the report's path. ``settings``: the
    report's knobs (default: the Kconfig defaults)."""
    settings = settings or GraphSettings.defaults()
    matrix = matrix_mod.load(matrix_dir)
    if not matrix.runs:
        raise UserError(
            f"no runs in {matrix_dir} (no run in a {LEDGER}, no subdirectory with a config.json): run `make` first, "
            "or pass MATRIX=<dir> naming a matrix directory"
        )
    writable_matrix(matrix_dir, "update-graphs")
    report = Report(matrix, writable_matrix(matrix_dir / GRAPHS, "update-graphs"), settings.formats)
    log.info("matrix %s: %d runs (%s) in %s", matrix.name, len(matrix.runs), state_counts(matrix.runs), matrix_dir)
    for section in SECTIONS:
        section(report)
    log.info("%d graphs in %s", report.drawn, report.graphs)
    path = matrix_dir / REPORT
    atomic_write_text(path, report.text())
    write_html(path)
    write_matrix_tables(matrix_dir, matrix.runs)
    log.info("wrote %s, its HTML, %s and %s", path, RUNS_CSV, STEPS_CSV)
    return path
