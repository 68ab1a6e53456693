"""The results database: every matrix of RESULTS_DIR in one DuckDB file, for SQL across matrices.

``RESULTS_DIR/results.duckdb`` holds the tables of :mod:`lib.export` over every matrix directory directly in
RESULTS_DIR (links such as ``latest`` are skipped: the matrix they point at is there under its own name), with
a ``matrix`` column first, the directory's name:

``runs``    one row per run (the columns of ``results.csv``)
``steps``   one row per row of a run's ``metrics.jsonl`` (the columns of ``steps.csv``)
``oneshot`` one row per one-shot pruning result of a run (``<run>/oneshot/*/prune.json``) or of a Hugging Face
          model (``RESULTS_DIR/oneshot/<model>/*/prune.json``; ``matrix`` and ``run_id`` empty)

``make update-graphs`` rebuilds it from the run directories when the matrix it draws is in RESULTS_DIR. It is
written to a temporary file renamed over the old one, so a reader sees the old database or the new one, never
half of one. ``make query SQL="..."`` (:func:`query`) reads it, read-only. ``docs/results.md`` documents the
schema.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from pathlib import Path

import duckdb

from lib.errors import UserError
from lib.export import Table, oneshot_table, runs_table, steps_table
from lib.results import Run, load_matrix, model_oneshot, sync_file, writable_dir

log = logging.getLogger(__name__)

DATABASE = "results.duckdb"
EXAMPLE = 'make query SQL="select matrix, state, count(*) from runs group by all"'


def matrices(results_dir: Path) -> dict[str, list[Run]]:
    """Matrix name -> runs, for each directory of ``results_dir`` that holds runs (a ledger or run directories);
    one that cannot be read is left out with a warning, so it never keeps the others out of the database."""
    found = {}
    for entry in sorted(results_dir.iterdir()):
        if entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            runs = load_matrix(entry)
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("%s is left out of the results database (%s: %s)", entry, type(e).__name__, e)
            continue
        if runs:
            found[entry.name] = runs
    return found


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _load(con: duckdb.DuckDBPyConnection, name: str, table: Table, scratch: Path) -> None:
    """Table ``name`` from ``table``, through a CSV file read with the column types given (no guessing)."""
    path = scratch / f"{name}.csv"
    with open(path, "w", newline="") as f:
        table.write_rows(f)
    columns = ", ".join(f"{_literal(c)}: {_literal(t)}" for c, t in table.sql_types().items())
    read = f"read_csv(?, header = true, auto_detect = false, columns = {{{columns}}})"
    con.execute(f"CREATE TABLE {name} AS SELECT * FROM {read}", [str(path)])


def build(results_dir: Path) -> Path:
    """Rebuild ``results_dir/results.duckdb`` from every matrix in ``results_dir``; returns its path."""
    writable_dir(results_dir, "RESULTS_DIR", f"make it writable: {DATABASE} is rebuilt there")
    found = matrices(results_dir)
    oneshot = oneshot_table(found, model_oneshot(results_dir))
    tables = {"runs": runs_table(found), "steps": steps_table(found), "oneshot": oneshot}
    path = results_dir / DATABASE
    tmp = results_dir / f".{DATABASE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with tempfile.TemporaryDirectory(prefix="results-db-") as scratch:
            con = duckdb.connect(str(tmp))
            try:
                for name, table in tables.items():
                    _load(con, name, table, Path(scratch))
                from lib.analysis import store  # here: it writes through this module's database

                store.load_tables(con, results_dir)  # the analyses' tables survive the rebuild
            finally:
                con.close()
        sync_file(tmp)
        os.replace(tmp, path)
        sync_file(results_dir)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    counts = ", ".join(f"{len(t.rows)} {name}" for name, t in tables.items())
    log.info("wrote %s: %d matrices, %s", path, len(found), counts)
    return path


def _one_line(error: Exception) -> str:
    """DuckDB's message without the query excerpt it adds after a blank line, on one line."""
    return " ".join(str(error).split("\n\n")[0].split())


def query(results_dir: Path, sql: str) -> tuple[list[str], list[tuple]]:
    """Column names and rows of ``sql`` run read-only on ``results_dir/results.duckdb`` (none for a statement
    without a result). Bad SQL, a missing database or a failing query: one :class:`UserError`."""
    try:
        with duckdb.connect() as scratch:  # the syntax first, wherever results live
            statements = scratch.extract_statements(sql)
    except duckdb.Error as e:
        raise UserError(f"SQL: {_one_line(e)}") from None
    if not statements:
        raise UserError(f"SQL is empty: name a query, e.g. `{EXAMPLE}`")
    path = results_dir / DATABASE
    if not path.is_file():
        raise UserError(
            f"no results database at {path}: `make update-graphs` builds it from the matrices in {results_dir}/ "
            '(SET="RESULTS_DIR=<dir>" names another RESULTS_DIR)'
        )
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as e:
        raise UserError(f"cannot open {path} ({_one_line(e)}): `make update-graphs` rebuilds it") from None
    try:
        result = con.execute(sql)
        if result.description is None:
            return [], []
        return [d[0] for d in result.description], result.fetchall()
    except duckdb.Error as e:
        raise UserError(f"SQL: {_one_line(e)} (tables: runs, steps; their columns: docs/results.md)") from None
    finally:
        con.close()
