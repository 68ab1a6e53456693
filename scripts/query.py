"""Run SQL on the results database and print the result as a table (``make query SQL="..."``).

The database is ``RESULTS_DIR/results.duckdb`` (RESULTS_DIR from ``--config`` and ``--set``, as every command
finds it), which ``make update-graphs`` rebuilds from every matrix in RESULTS_DIR: table ``runs`` (one row per
run) and table ``steps`` (one row per logged step), each with a ``matrix`` column. It is opened read-only.
docs/results.md lists the columns. For example:

    make query SQL="select matrix, optimizer, avg(final_accuracy) from runs where state = 'done' group by all"

Numbers are printed as Python writes them (every digit), a missing value as NULL, then the row count.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from lib import config as config_mod
from lib.database import query
from lib.errors import ArgumentParser, run_cli
from lib.results import resolve_matrix


def text(value: Any) -> str:
    return "NULL" if value is None else str(value)


def _numeric(values: list[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns padded to their widest cell (numbers to the right), a rule under the header, then the count."""
    cells = [[text(v) for v in row] for row in rows]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)]
    right = [_numeric([row[i] for row in rows]) for i in range(len(columns))]

    def line(items: Sequence[str]) -> str:
        padded = [s.rjust(w) if r else s.ljust(w) for s, w, r in zip(items, widths, right, strict=True)]
        return "  ".join(padded).rstrip()

    count = f"({len(rows)} row{'' if len(rows) == 1 else 's'})"
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(row) for row in cells), count])


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m scripts.query", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sql", nargs="?", default="", help="the query (SQL=)")
    parser.add_argument("--config", default=str(config_mod.DOTCONFIG), help="the .config that names RESULTS_DIR")
    parser.add_argument("--set", default="", help="overrides: 'SYM=VALUE ...', e.g. 'RESULTS_DIR=<dir>'")
    args = parser.parse_args(argv)
    results_dir = resolve_matrix(args.config, config_mod.split_overrides(args.set)).results_dir
    columns, rows = query(results_dir, args.sql)
    if columns:
        print(format_table(columns, rows))
    return 0


if __name__ == "__main__":
    run_cli(main)
