"""Draw the graphs of a matrix and write its report, computed from its ledger and its run directories.

The ledger ``<matrix>/matrix.json`` (written by the runner) says which runs exist and the state of each
(pending, running, done, failed, interrupted), including runs that have no directory yet. Every
``<matrix>/<run>/`` (``config.json``, ``status.json``, ``metrics.jsonl``, ``summary.json``) adds what the run
has produced so far; a running run's ``status.json`` gives its progress. A matrix without a ledger is read from
its run directories alone. Writes into the matrix directory:

``graphs/curves-<run>.png``         one run: train loss (learning rate on a twin axis) and eval metric vs step
``graphs/train-loss.png``           every run's train loss, overlaid
``graphs/eval-<metric>.png``        every run's eval metric, overlaid
``graphs/<metric>-vs-sparsity[-<model>].png``
                                    final metric vs target sparsity, one line per combination of the other
                                    axes (optimizer x pruning, plus any extra axis); dense runs (pruning
                                    "none") as dashed horizontal lines; one figure per model when there are
                                    several
``report.md``                       counts, the graphs, a table of every run, the failed runs and why, and
                                    the final metric per target sparsity; for banded-MLP runs, one table
                                    per band width (rows = evaluation steps, columns = dense baseline /
                                    FC1 / FC2 / FC1+FC2) and a final table with the change vs the baseline;
                                    for GPT-2 runs with GPT2_REPORT_SAMPLE_TOKENS > 0, a text sample of each
                                    (cached in the run's ``sample.json``)

Seeds are aggregated as mean ± sample standard deviation (ddof=1); a single seed has no ± and no error bar.
Only runs whose state is "done" enter the vs-sparsity figures and tables.

The matrix is ``--matrix DIR`` (``MATRIX=``), else ``RESULTS_DIR/latest`` with RESULTS_DIR from ``--config``
and ``--set`` (``SET="RESULTS_DIR=<dir>"``), as every command finds it (``lib.results.resolve_matrix``).

The package: ``matrix`` reads the runs (``lib.results.Run`` interprets each), ``numbers`` formats them,
``grouping`` groups them for comparison, ``figures`` and ``tables`` draw; ``report.Report`` is what the
modules of ``sections/`` append to, in the order ``sections.SECTIONS`` lists them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lib import config as config_mod
from lib.errors import ArgumentParser, UserError
from lib.results import resolve_matrix
from scripts.update_graphs.report import Report, update_graphs

__all__ = ["Report", "main", "matrix_dir", "update_graphs"]


def matrix_dir(args: argparse.Namespace) -> Path:
    """The matrix to draw, which must be a directory: one line saying which and how to name another if not."""
    overrides = config_mod.split_overrides(args.set)
    if args.results:
        overrides.append(f"RESULTS_DIR={args.results}")
    place = resolve_matrix(args.config, overrides, args.matrix)
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
    update_graphs(matrix_dir(args))
    return 0
