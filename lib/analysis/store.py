"""The analysis rows as tables of the results database (``RESULTS_DIR/results.duckdb``, :mod:`lib.database`).

One table per analysis, with the fixed schemas of :data:`TABLES` (documented in ``docs/results.md`` and
``docs/analysis.md``). Every row carries a ``source``: the name of what was analysed (e.g. ``opt-125m``, or an
ablation's method). Writing rows for a source replaces that source's earlier rows, so re-running an analysis
never doubles it.

The truth is one CSV per table in ``RESULTS_DIR/analysis/<table>.csv`` (written atomically, cells as
:func:`lib.export.cell` writes them); the database table is reloaded from it after each write. ``make
update-graphs`` rebuilds ``results.duckdb`` from the run directories into a new file: :func:`load_tables` is what
that rebuild calls on its connection to carry the analysis tables over.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import duckdb

from lib.database import DATABASE
from lib.export import cell
from lib.results import atomic_write_text, writable_dir

log = logging.getLogger(__name__)

ANALYSIS_DIR = "analysis"  # in RESULTS_DIR: the tables as CSV files

_WHERE = [
    (
        "source",
        "VARCHAR",
        "what was analysed (a model, an ablation's method): rows of one source are replaced together",
    ),
    ("layer", "BIGINT", "the block (transformer layer) index"),
    ("component", "VARCHAR", "the Linear's module path in the block (self_attn.q_proj, fc1, mlp.down_proj, ...)"),
]
_ACTIVATIONS = [
    ("sparsity", "DOUBLE", "the target activation sparsity of the threshold (published: 0.9)"),
    ("threshold", "DOUBLE", "the projection's threshold: an entry x is active when abs(x) > threshold"),
]

_PAIR = [
    _WHERE[0],
    ("method", "VARCHAR", "the method when both mask sets are one method's (two sparsities, or N:M vs unstructured)"),
    ("label_a", "VARCHAR", "the first mask set (a make prune result: wanda-0.5, or wanda-0.5-2of4)"),
    ("label_b", "VARCHAR", "the second mask set (e.g. sparsegpt-0.5, or wanda-0.5)"),
    *_WHERE[1:],
    ("indices", "VARCHAR", "the indices field of the mask file's name (empty when not from files)"),
]
_AGREEMENT = [
    ("jaccard", "DOUBLE", "intersection / union of the kept positions (1 when both are empty)"),
    ("hamming", "BIGINT", "positions kept by one mask and pruned by the other"),
    ("hamming_frac", "DOUBLE", "hamming / entries compared"),
    ("cosine", "DOUBLE", "cosine similarity of the two pruned weights (NaN without weights, or for a zero one)"),
    ("density_a", "DOUBLE", "fraction kept by mask a"),
    ("density_b", "DOUBLE", "fraction kept by mask b"),
]

# table -> (column, SQL type, meaning), in column order
TABLES: dict[str, list[tuple[str, str, str]]] = {
    "mask_comparison": [*_PAIR, *_AGREEMENT],
    "mask_features": [*_PAIR, ("feature", "BIGINT", "the output feature (a row of the weight)"), *_AGREEMENT],
    "mask_clusters": [
        _WHERE[0],
        ("label", "VARCHAR", "the mask set (a make prune result: wanda-0.5, sparsegpt-0.5-2of4, ...)"),
        *_WHERE[1:],
        ("indices", "VARCHAR", "the indices field of the mask file's name"),
        ("reference", "BIGINT", "the reference input feature: the weight's column that keeps the most entries"),
        ("features", "BIGINT", "input features (columns) clustered: the nearest to the reference (at most 128)"),
        ("k", "BIGINT", "clusters (4, 8, 16)"),
        ("seed", "BIGINT", "k-means random_state"),
        ("within_all", "DOUBLE", "mean Hamming distance (fraction of outputs) over pairs in one cluster"),
        ("between_all", "DOUBLE", "mean Hamming distance over pairs in different clusters"),
        ("separation", "DOUBLE", "between_all / within_all: how strongly the kept positions cluster"),
    ],
    "coactivation_clusters": [
        *_WHERE,
        *_ACTIVATIONS,
        ("reference", "BIGINT", "the reference feature"),
        ("features", "BIGINT", "features clustered: the nearest to the reference (published: 128)"),
        ("k", "BIGINT", "clusters (published: 4, 8, 16)"),
        ("seed", "BIGINT", "k-means random_state"),
        ("cluster", "BIGINT", "the cluster, 0..k-1"),
        ("size", "BIGINT", "features in the cluster"),
        ("within_mean", "DOUBLE", "mean Hamming distance (fraction of tokens) over pairs inside the cluster"),
        ("between_mean", "DOUBLE", "mean Hamming distance from the cluster's features to the other clusters'"),
        ("within_all", "DOUBLE", "the clustering's mean Hamming distance over pairs in one cluster"),
        ("between_all", "DOUBLE", "the clustering's mean Hamming distance over pairs in different clusters"),
        ("separation", "DOUBLE", "between_all / within_all"),
    ],
    "coactivation_hamming": [
        *_WHERE,
        *_ACTIVATIONS,
        ("reference", "BIGINT", "the reference feature"),
        ("features", "BIGINT", "features whose pairwise distances are counted (the nearest to the reference)"),
        ("bin_lo", "DOUBLE", "the bin's lower edge (Hamming distance, fraction of tokens)"),
        ("bin_hi", "DOUBLE", "the bin's upper edge"),
        ("pairs", "BIGINT", "feature pairs with a distance in the bin"),
    ],
    "mmm_coherence": [
        *_WHERE,
        *_ACTIVATIONS,
        ("block_size", "BIGINT", "features per block"),
        ("ordering", "VARCHAR", "how features were ordered before blocking: index, or hamming (to a reference)"),
        ("features", "BIGINT", "features of the projection"),
        ("tokens", "BIGINT", "tokens observed"),
        ("coherence", "DOUBLE", "fraction of (block, token) pairs in which every feature of the block is 0"),
        ("pays_off", "BOOLEAN", "coherence > 0.3, the published rule of thumb for MMM"),
    ],
}


def columns(table: str) -> list[str]:
    return [name for name, _, _ in TABLES[table]]


def csv_path(results_dir: Path, table: str) -> Path:
    return results_dir / ANALYSIS_DIR / f"{table}.csv"


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def rows(results_dir: str | Path, table: str, sources: Iterable[str] | None = None) -> list[dict[str, str]]:
    """The rows of an analysis table from its CSV file (the truth; cells as text, empty when missing), only
    those of ``sources`` when given; none when the table was never written."""
    if table not in TABLES:
        raise ValueError(f"unknown analysis table {table!r}: one of {', '.join(TABLES)}")
    found = _read_csv(csv_path(Path(results_dir), table))
    wanted = None if sources is None else set(sources)
    return [r for r in found if wanted is None or r.get("source") in wanted]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _load_one(con: duckdb.DuckDBPyConnection, results_dir: Path, table: str) -> None:
    """Table ``table`` from its CSV file (replacing it), with the declared types."""
    types = ", ".join(f"{_literal(c)}: {_literal(t)}" for c, t, _ in TABLES[table])
    read = f"read_csv(?, header = true, auto_detect = false, columns = {{{types}}})"
    con.execute(f"DROP TABLE IF EXISTS {table}")
    con.execute(f"CREATE TABLE {table} AS SELECT * FROM {read}", [str(csv_path(results_dir, table))])


def load_tables(con: duckdb.DuckDBPyConnection, results_dir: Path) -> list[str]:
    """Every analysis table that has a CSV file in ``results_dir/analysis`` into ``con``; returns their names."""
    loaded = [t for t in TABLES if csv_path(results_dir, t).is_file()]
    for table in loaded:
        _load_one(con, results_dir, table)
    return loaded


def write(results_dir: str | Path, table: str, source: str, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Replace ``source``'s rows of ``table`` by ``rows`` (dicts of its columns less ``source``; a missing key is
    empty), in the CSV file and in ``results_dir/results.duckdb``; returns the database's path."""
    if table not in TABLES:
        raise ValueError(f"unknown analysis table {table!r}: one of {', '.join(TABLES)}")
    names = columns(table)
    rows = [{**row, "source": source} for row in rows]
    unknown = sorted({k for row in rows for k in row} - set(names))
    if unknown:
        raise ValueError(f"{table} has no columns {unknown}: its columns are {names}")
    results_dir = writable_dir(results_dir, "RESULTS_DIR", "make it writable: the analysis tables are written there")
    writable_dir(results_dir / ANALYSIS_DIR, "RESULTS_DIR", "make it writable: the analysis tables are written there")
    path = csv_path(results_dir, table)
    kept = [r for r in _read_csv(path) if r.get("source") != source]  # cells as they were written
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    writer.writerows([r.get(c, "") for c in names] for r in kept)
    writer.writerows([cell(r.get(c)) for c in names] for r in rows)
    atomic_write_text(path, out.getvalue())
    database = results_dir / DATABASE
    with duckdb.connect(str(database)) as con:
        _load_one(con, results_dir, table)
    log.debug("%s: %d rows of %s in %s", table, len(rows), source, database)  # callers report what they wrote
    return database


def read(results_dir: str | Path, table: str) -> tuple[list[str], list[tuple]]:
    """Column names and rows of an analysis table, from the database opened read-only."""
    if table not in TABLES:
        raise ValueError(f"unknown analysis table {table!r}: one of {', '.join(TABLES)}")
    with duckdb.connect(str(Path(results_dir) / DATABASE), read_only=True) as con:
        result = con.execute(f"SELECT * FROM {table}")
        return [d[0] for d in result.description], result.fetchall()
