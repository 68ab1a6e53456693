"""Runs as flat tables, for use outside this framework: spreadsheets, pandas, SQL.

``make update-graphs`` writes two CSV files beside each matrix's report, and loads the same tables, for every
matrix of RESULTS_DIR, into the results database (:mod:`lib.database`):

``results.csv`` (table ``runs``)   one row per run: its id, every matrix axis, its state, the final and best
                                   value of every eval metric (perplexity = exp(loss) for language-model runs),
                                   achieved sparsity, time, throughput and memory
``steps.csv`` (table ``steps``)    one row per row of each run's ``metrics.jsonl``: run id, split, step, then
                                   every metric column (empty where a row has no such key)

A cell is empty for a missing value; numbers are written as Python writes them (``repr``, so they read back
exactly), booleans as true/false, lists and objects as JSON. ``docs/results.md`` documents every column.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lib.results import Run, atomic_write_text

RUNS_CSV = "results.csv"
STEPS_CSV = "steps.csv"
MATRIX = "matrix"  # the column naming each row's matrix, in a table of several

# summary.json values copied as they are, after the metrics: achieved sparsity, time, speed, the allocator peak.
RUN_FIELDS = (
    "sparsity",
    "train_seconds",
    "throughput",
    "throughput_steady",
    "throughput_unit",
    "mfu",
    "steps",
    "peak_memory_bytes",
)
# Read from summary["memory"] (lib.memory), at whatever depth it keeps them (the shallowest wins: the counted
# bytes sit in its "counted"); mask_bytes falls back to the summary's own. Measured peaks and the CUDA context,
# then bytes counted from the tensors, then optimizer state + masks as a multiple of the weights' bytes.
MEMORY_FIELDS = (
    "peak_allocated_bytes",
    "peak_reserved_bytes",
    "peak_device_bytes",
    "cuda_context_bytes",
    "peak_rss_bytes",
    "param_bytes",
    "grad_bytes",
    "optimizer_state_bytes",
    "mask_bytes",
    "pruner_state_bytes",
    "state_x_weights",
)
STEP_KEYS = ("run_id", "split", "step")
# SQL types of the columns that may be empty in every row (a matrix of pending runs, summaries without "memory").
DECLARED = {
    "run_id": "VARCHAR",
    "state": "VARCHAR",
    "metric": "VARCHAR",
    "metric_mode": "VARCHAR",
    "best_step": "BIGINT",
    "throughput_unit": "VARCHAR",
    "steps": "BIGINT",
    "reason": "VARCHAR",
    "split": "VARCHAR",
    "step": "BIGINT",
    **{
        name: "DOUBLE"
        for name in ("sparsity", "train_seconds", "throughput", "throughput_steady", "mfu", "state_x_weights")
    },
    **{name: "BIGINT" for name in ("peak_memory_bytes", *MEMORY_FIELDS) if name != "state_x_weights"},
}


def cell(value: Any) -> str:
    """A value as one CSV cell (see the module's docstring)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value, sort_keys=True, allow_nan=True)


def sql_type(values: Iterable[Any], declared: str | None, floats: bool) -> str:
    """The SQL type of a column: BOOLEAN, BIGINT (whole numbers, unless ``floats``), DOUBLE, else VARCHAR; a
    column with no value takes its ``declared`` type (VARCHAR when none is)."""
    kinds = {bool if isinstance(v, bool) else int if isinstance(v, int) else type(v) for v in values if v is not None}
    if not kinds:
        return declared or "VARCHAR"
    if kinds == {bool}:
        return "BOOLEAN"
    if kinds == {int} and not floats:
        return "BIGINT"
    return "DOUBLE" if kinds <= {int, float} else "VARCHAR"


@dataclass
class Table:
    """Rows (dicts; a missing key is an empty cell) under columns in a fixed order."""

    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    floats: frozenset[str] = frozenset()  # columns that are DOUBLE even when every value is whole

    def write_rows(self, out: IO[str]) -> None:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows([cell(row.get(c)) for c in self.columns] for row in self.rows)

    def write_csv(self, path: str | os.PathLike) -> None:
        """The table as a CSV file, replaced atomically."""
        out = io.StringIO()
        self.write_rows(out)
        atomic_write_text(path, out.getvalue())

    def sql_types(self) -> dict[str, str]:
        return {c: sql_type((r.get(c) for r in self.rows), DECLARED.get(c), c in self.floats) for c in self.columns}


def merged_order(orders: Iterable[Sequence[str]]) -> list[str]:
    """Names in an order that keeps each sequence's: a name not seen yet goes right after its predecessor in
    its own sequence (first when it has none), so a matrix's extra axis stays beside the axes it follows."""
    out: list[str] = []
    for order in orders:
        previous = None
        for name in order:
            if name not in out:
                out.insert(out.index(previous) + 1 if previous is not None else 0, name)
            previous = name
    return out


def _language_model(summary: dict) -> bool:
    """A run whose throughput is in tokens, or that recorded a perplexity: its loss is a per-token NLL."""
    recorded = "perplexity" in (summary.get("final") or {}) or "perplexity" in (summary.get("best") or {})
    return recorded or summary.get("throughput_unit") == "tokens/s"


def _perplexity(values: dict) -> float | None:
    """The recorded perplexity, else exp(loss) (inf once exp overflows)."""
    if values.get("perplexity") is not None:
        return values["perplexity"]
    loss = values.get("loss")
    if loss is None:
        return None
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def run_metrics(run: Run) -> dict[str, tuple[Any, Any]]:
    """Eval metric -> (final, best) of a run with a summary; perplexity too for a language-model run."""
    summary = run.summary or {}
    final, best = summary.get("final") or {}, summary.get("best") or {}
    metrics = {m: (final.get(m), best.get(m)) for m in sorted((final.keys() | best.keys()) - {"step"})}
    if _language_model(summary):
        metrics["perplexity"] = (_perplexity(final) if final else None, _perplexity(best) if best else None)
    return dict(sorted(metrics.items()))


def _find(tree: Any, key: str) -> Any:
    """``key``'s value in the dict ``tree`` or the dicts nested in it, the shallowest first; None if absent."""
    level = [tree] if isinstance(tree, dict) else []
    while level:
        for node in level:
            if key in node:
                return node[key]
        level = [v for node in level for v in node.values() if isinstance(v, dict)]
    return None


def run_row(run: Run, metrics: Sequence[str]) -> dict[str, Any]:
    """One run as a row of the runs table (its ``metrics``' final and best values)."""
    summary = run.summary or {}
    values = run_metrics(run)
    row: dict[str, Any] = {"run_id": run.run_id, **run.axes, "state": run.state}
    row.update(metric=summary.get("metric"), metric_mode=summary.get("metric_mode"))
    for metric in metrics:
        row[f"final_{metric}"], row[f"best_{metric}"] = values.get(metric, (None, None))
    row["best_step"] = (summary.get("best") or {}).get("step")
    row.update({name: summary.get(name) for name in RUN_FIELDS})
    memory = summary.get("memory")
    row.update({name: _find(memory, name) for name in MEMORY_FIELDS})
    if row["mask_bytes"] is None:
        row["mask_bytes"] = summary.get("mask_bytes")
    row["reason"] = run.reason if run.state in ("failed", "interrupted") else None
    return row


def _labelled(matrices: Mapping[str | None, Sequence[Run]]) -> tuple[list[str], list[tuple[str | None, Run]]]:
    lead = [] if None in matrices else [MATRIX]
    return lead, [(name, run) for name, runs in matrices.items() for run in runs]


def runs_table(matrices: Mapping[str | None, Sequence[Run]]) -> Table:
    """The runs table of one matrix (``{None: runs}``) or of several by name (then a ``matrix`` column first).
    Columns: run_id, the axes, state, metric, metric_mode, final_<m> and best_<m> for each eval metric m
    (alphabetical), best_step, :data:`RUN_FIELDS`, :data:`MEMORY_FIELDS`, reason."""
    lead, runs = _labelled(matrices)
    axes = merged_order(list(run.axes) for _, run in runs)
    metrics = sorted({m for _, run in runs for m in run_metrics(run)})
    finals, bests = [f"final_{m}" for m in metrics], [f"best_{m}" for m in metrics]
    columns = [*lead, "run_id", *axes, "state", "metric", "metric_mode", *finals, *bests, "best_step"]
    columns += [*RUN_FIELDS, *MEMORY_FIELDS, "reason"]
    rows = [{MATRIX: name, **run_row(run, metrics)} for name, run in runs]
    return Table(columns, rows, frozenset(finals + bests))


def steps_table(matrices: Mapping[str | None, Sequence[Run]]) -> Table:
    """Every row of every run's ``metrics.jsonl``: (matrix,) run_id, split, step, then the other keys sorted."""
    lead, runs = _labelled(matrices)
    reserved = {MATRIX, *STEP_KEYS}
    keys = sorted({k for _, run in runs for row in run.metrics for k in row} - reserved)
    rows = [{**row, MATRIX: name, "run_id": run.run_id} for name, run in runs for row in run.metrics]
    return Table([*lead, *STEP_KEYS, *keys], rows)


ONESHOT_COLUMNS = (
    "method",
    "variant",
    "pattern",
    "target",
    "sparsity",
    "perplexity_before",
    "perplexity_after",
    "perplexity_change",
    "calibration_corpus",
    "calibration_samples",
    "calibration_seqlen",
    "calibration_seed",
    "seconds",
    "result",
)


def oneshot_row(run_id: str | None, summary: dict) -> dict[str, Any]:
    """One ``prune.json`` (of run ``run_id``, or of a model that is not a run: None) as a row of the oneshot
    table."""
    ppl, calib = summary.get("perplexity") or {}, summary.get("calibration") or {}
    before, after = ppl.get("before"), ppl.get("after")
    return {
        "run_id": run_id,
        "model": summary.get("model"),
        "method": summary.get("method"),
        "variant": summary.get("variant") or None,
        "pattern": summary.get("pattern"),
        "target": summary.get("target"),
        "sparsity": summary.get("sparsity"),
        "perplexity_before": before,
        "perplexity_after": after,
        "perplexity_change": after / before - 1 if before and after is not None else None,
        "calibration_corpus": calib.get("corpus"),
        "calibration_samples": calib.get("samples"),
        "calibration_seqlen": calib.get("seqlen"),
        "calibration_seed": calib.get("seed"),
        "seconds": summary.get("seconds"),
        "result": summary["name"],
    }


def oneshot_table(
    matrices: Mapping[str | None, Sequence[Run]], models: Mapping[str, Sequence[dict]] | None = None
) -> Table:
    """One row per one-shot pruning result of a run (:attr:`Run.oneshot`), then per result of a model that is
    not a run (``models``: :func:`lib.results.model_oneshot`; matrix and run_id empty): (matrix,) run_id, model
    (the name ``make prune`` gave the model: a run's directory name, ``facebook--opt-125m``), then
    :data:`ONESHOT_COLUMNS` (``perplexity_change``: after / before - 1; ``result``: the directory name). The run's
    axes are the runs table's: join on (matrix, run_id), so no axis name can collide with these columns."""
    lead, runs = _labelled(matrices)
    rows = [{MATRIX: name, **oneshot_row(run.run_id, summary)} for name, run in runs for summary in run.oneshot]
    rows += [{MATRIX: None, **oneshot_row(None, s)} for found in (models or {}).values() for s in found]
    floats = frozenset({"target", "sparsity", "perplexity_before", "perplexity_after", "perplexity_change"})
    return Table([*lead, "run_id", "model", *ONESHOT_COLUMNS], rows, floats)


def write_matrix_tables(matrix_dir: Path, runs: Sequence[Run]) -> tuple[Path, Path]:
    """``results.csv`` and ``steps.csv`` of one matrix, in its directory; returns their paths."""
    paths = matrix_dir / RUNS_CSV, matrix_dir / STEPS_CSV
    runs_table({None: runs}).write_csv(paths[0])
    steps_table({None: runs}).write_csv(paths[1])
    return paths
