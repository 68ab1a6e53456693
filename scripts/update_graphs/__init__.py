"""Draw the graphs of a matrix and write its report, computed from its ledger and its run directories.

The ledger ``<matrix>/matrix.json`` (written by the runner) says which runs exist and the state of each
(pending, running, done, failed, interrupted), including runs that have no directory yet. Every
``<matrix>/<run>/`` (``config.json``, ``status.json``, ``metrics.jsonl``, ``summary.json``) adds what the run
has produced so far; a running run's ``status.json`` gives its progress. A matrix without a ledger is read from
its run directories alone. Writes into the matrix directory (each figure in every format of GRAPH_FORMATS, png
by default; ``[-<model>]``: one figure per model when the matrix has several):

``graphs/curves-<run>.png``         one run: train loss (learning rate on a twin axis) and eval metric vs step
``graphs/train-loss.png``           every run's train loss, overlaid
``graphs/eval-<metric>.png``        every run's eval metric, overlaid
``graphs/<metric>-vs-sparsity[-<model>].png``
                                    final metric vs target sparsity, one line per method (optimizer x pruning,
                                    plus any other axis that varies); dense runs (pruning "none") as dashed
                                    horizontal reference lines
``graphs/evolution-<metric>[-<model>].png``
                                    eval metric and train loss vs step, per method and target sparsity
``graphs/perplexity[-<model>].png`` final perplexity per method, for runs that record one (GPT-2)
``graphs/memory-peak[-<model>].png``
                                    peak (device) memory per method and target sparsity
``graphs/memory-panels[-<model>].png``
                                    six panels: peak memory, peak RSS, optimizer state, masks, state + masks
                                    as × weights, final metric
``graphs/memory-vs-<metric>[-<model>].png``
                                    peak memory vs final metric, one point per run
``graphs/efficiency[-<model>].png`` accuracy per 100 MiB of peak memory, ranked
``graphs/memory-timeline[-<model>].png``
                                    each run's sampled memory over time
``report.md``                       counts, the graphs, a table of every run, the failed runs and why, and
                                    the final metric per target sparsity; for banded-MLP runs, one table
                                    per band width (rows = evaluation steps, columns = dense baseline /
                                    FC1 / FC2 / FC1+FC2) and a final table with the change vs the baseline;
                                    for GPT-2 runs with GPT2_REPORT_SAMPLE_TOKENS > 0, a text sample of each
                                    (cached in the run's ``sample.json``)
``report.html``                     the same report as one page, the figures inline (``html``)
``results.csv``, ``steps.csv``      one row per run / per logged step (``lib.export``; docs/results.md)

and then rebuilds ``RESULTS_DIR/results.duckdb`` over every matrix of RESULTS_DIR (``lib.database``; ``make
query``) when the matrix is one of them. ``MATRIX="a b"`` draws each and compares them (``compare``):
``compare-a-b/`` beside ``a``.

Seeds are aggregated as mean ± sample standard deviation (ddof=1); a single seed has no ± and no error bar;
the tables say whether a difference from the dense baseline exceeds the seeds' spread (``numbers.SPREAD_RULE``).
Only runs whose state is "done" enter the comparisons. A method has one colour in every figure
(``grouping.Methods``). A memory figure whose runs do not record what it shows (run directories from before
memory was measured) leaves one "not measured: ..." line in the report instead.

The matrix is ``--matrix DIR`` (``MATRIX=``; several separated by spaces), else ``RESULTS_DIR/latest`` with
RESULTS_DIR from ``--config`` and ``--set`` (``SET="RESULTS_DIR=<dir>"``), as every command finds it
(``lib.results.resolve_matrix``).

The package: ``matrix`` reads the runs (``lib.results.Run`` interprets each), ``numbers`` formats them,
``grouping`` groups them for comparison, ``figures`` and ``tables`` draw; ``report.Report`` is what the
modules of ``sections/`` append to, in the order ``sections.SECTIONS`` lists them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lib import config as config_mod
from lib import database
from lib.errors import ArgumentParser, UserError
from lib.results import MatrixPlace, resolve_matrix
from scripts.update_graphs import compare
from scripts.update_graphs.report import Report, update_graphs
from scripts.update_graphs.settings import GraphSettings

__all__ = ["Report", "main", "matrix_dir", "matrix_dirs", "update_graphs"]


def matrix_place(args: argparse.Namespace, matrix: str | None) -> MatrixPlace:
    """Where the matrix ``matrix`` (one MATRIX= name; None: RESULTS_DIR/latest) is, as every command finds it."""
    overrides = config_mod.split_overrides(args.set)
    if args.results:
        overrides.append(f"RESULTS_DIR={args.results}")
    return resolve_matrix(args.config, overrides, matrix)


def matrix_names(value: str | None) -> list[str | None]:
    """MATRIX= as matrices: one directory (also one whose name has spaces), else several separated by spaces."""
    if not value or Path(value).is_dir() or len(value.split()) < 2:
        return [value]
    return value.split()


def matrix_dirs(args: argparse.Namespace) -> tuple[list[Path], Path]:
    """The matrices to draw (several are compared), each a directory, and RESULTS_DIR."""
    names = matrix_names(args.matrix)
    places = [matrix_place(args, name) for name in names]
    try:
        dirs = [matrix_dir(place) for place in places]
    except UserError as e:
        if len(names) < 2:
            raise
        raise UserError(f"{e} (MATRIX names {len(names)} matrices to compare, separated by spaces)") from None
    if len(dirs) > 1:
        compare.labels(dirs)  # distinct names, checked before anything is drawn
    return dirs, places[0].results_dir


def matrix_dir(place: MatrixPlace) -> Path:
    """The matrix to draw, which must be a directory: one line saying which and how to name another if not."""
    if place.path.is_dir():
        return place.path
    if place.latest:
        raise UserError(
            f"no matrix at {place.path} (the link to the newest matrix): run `make` first, "
            f"or pass MATRIX=<dir> (--matrix <dir>) naming a matrix directory under {place.results_dir}/"
        )
    raise UserError(
        f"matrix directory {place.path} does not exist: pass MATRIX=<dir> (--matrix <dir>) naming a directory "
        f"under {place.results_dir}/, or run `make` first"
    )


def report_settings(args: argparse.Namespace) -> GraphSettings:
    """The report's knobs (GRAPH_FORMATS) from the .config with ``--set`` applied; from the defaults with
    ``--set`` when there is no valid .config (:func:`matrix_dir` has said why)."""
    overrides = config_mod.split_overrides(args.set)
    path = Path(args.config)
    try:
        cfg = config_mod.load(path, overrides) if path.is_file() else None
    except UserError:
        cfg = None
    return GraphSettings.from_config(cfg or config_mod.from_defaults(overrides))


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m scripts.update_graphs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--matrix", metavar="DIR", help="matrix directory (default: RESULTS_DIR/latest)")
    parser.add_argument("--config", default=str(config_mod.DOTCONFIG), help="the .config that names RESULTS_DIR")
    parser.add_argument("--set", default="", help="overrides: 'SYM=VALUE ...', e.g. 'RESULTS_DIR=<dir>'")
    parser.add_argument("--results", metavar="DIR", help="RESULTS_DIR, the same as --set RESULTS_DIR=DIR")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dirs, results_dir = matrix_dirs(args)
    settings = report_settings(args)
    for path in dirs:
        update_graphs(path, settings)
    if len(dirs) > 1:
        compare.compare(dirs)
    if any(path.resolve().parent == results_dir.resolve() for path in dirs):
        database.build(results_dir)  # every matrix of RESULTS_DIR; one drawn elsewhere is not among them
    return 0
