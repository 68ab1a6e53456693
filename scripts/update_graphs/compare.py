"""Two or more matrices side by side: ``make update-graphs MATRIX="a b"`` writes each matrix's own report, then
``compare-<a>-<b>/`` beside the first matrix:

``report.md``, ``report.html``  per eval metric, a table of the final value for each combination of the axes
                                (seeds averaged: mean ± sample std over the done runs, and how many), one
                                column per matrix and the difference of each from the first matrix
``results.csv``                 every run of every matrix (the runs table of ``lib.export``, ``matrix`` first)
``comparison.csv``              the tables' numbers unrounded: metric, the axes, then ``mean:<m>`` and
                                ``runs:<m>`` of each matrix m, and ``diff:<m>`` = mean:<m> − the first's mean

A matrix is named by its directory's name. Only done runs with a final value enter the tables.
"""

from __future__ import annotations

import logging
import os
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lib.errors import UserError
from lib.export import RUNS_CSV, Table, merged_order, runs_table
from lib.results import REPORT, atomic_write_text, writable_dir
from scripts.update_graphs import matrix as matrix_mod
from scripts.update_graphs.html import write_html
from scripts.update_graphs.matrix import Matrix, state_counts
from scripts.update_graphs.tables import md_table

log = logging.getLogger(__name__)

COMPARISON_CSV = "comparison.csv"
MISSING = "—"
# metric -> axis values (without the seed) -> matrix name -> final values of its done runs
Finals = dict[str, dict[tuple, dict[str, list[float]]]]


def labels(dirs: Sequence[Path]) -> list[str]:
    """The matrices' names (their directories' names), which must differ."""
    names = [d.resolve().name for d in dirs]
    for name in sorted({n for n in names if names.count(n) > 1}):
        same = " and ".join(str(d) for d, n in zip(dirs, names, strict=True) if n == name)
        raise UserError(f"MATRIX names two matrices called {name} ({same}): compare matrices with different names")
    return names


def compared_axes(matrices: dict[str, Matrix]) -> list[str]:
    """Every axis but the seed (averaged over), in the matrices' order, less those no run has a value for."""
    runs = [run for matrix in matrices.values() for run in matrix.runs]
    axes = merged_order(list(run.axes) for run in runs)
    return [a for a in axes if a != "seed" and any(run.axes.get(a) is not None for run in runs)]


def finals(matrices: dict[str, Matrix], axes: Sequence[str]) -> Finals:
    out: Finals = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for name, matrix in matrices.items():
        for run in matrix.runs:
            metric = matrix.metric(run)
            value = run.final(metric) if metric and run.state == "done" else None
            if value is not None:
                out[metric][tuple(run.axes.get(a) for a in axes)][name].append(value)
    return out


def _order(key: tuple) -> tuple:
    number = (int, float)
    return tuple((0, v, "") if isinstance(v, number) else (1, 0, str(v)) if v is not None else (2, 0, "") for v in key)


def _percent(matrices: dict[str, Matrix], metric: str) -> bool:
    formats = [m.formats[metric] for m in matrices.values() if metric in m.formats]
    return bool(formats) and all(f.percent for f in formats)


def _value(value: float, percent: bool, sign: str = "") -> str:
    return f"{value * 100:{sign}.2f}" if percent else f"{value:{sign}#.4g}"


def _mean_cell(values: list[float], percent: bool) -> str:
    if not values:
        return MISSING
    text = _value(statistics.fmean(values), percent)
    if len(values) > 1:
        text += f" ± {_value(statistics.stdev(values), percent)}"
    return f"{text} ({len(values)})"


def metric_table(cells: dict, names: list[str], axes: list[str], percent: bool) -> list[str]:
    """The Markdown table of one metric: a row per axis combination, a column per matrix, then differences."""
    first, others = names[0], names[1:]
    header = [*axes, *names, *(f"Δ {n} − {first}" for n in others)]
    rows = []
    for key in sorted(cells, key=_order):
        by_name = cells[key]
        means = {n: statistics.fmean(v) for n, v in by_name.items() if v}
        diffs = [
            _value(means[n] - means[first], percent, "+") if {n, first} <= means.keys() else MISSING for n in others
        ]
        axis_cells = [MISSING if v is None else v for v in key]
        rows.append([*axis_cells, *(_mean_cell(by_name.get(n, []), percent) for n in names), *diffs])
    return md_table(header, rows)


def comparison_table(data: Finals, names: list[str], axes: list[str]) -> Table:
    """comparison.csv: the numbers of every metric table, unrounded."""
    columns = ["metric", *axes]
    for name in names:
        columns += [f"mean:{name}", f"runs:{name}"] + ([f"diff:{name}"] if name != names[0] else [])
    rows: list[dict[str, Any]] = []
    for metric, cells in sorted(data.items()):
        for key in sorted(cells, key=_order):
            row: dict[str, Any] = {"metric": metric, **dict(zip(axes, key, strict=True))}
            means = {n: statistics.fmean(v) for n, v in cells[key].items() if v}
            for name in names:
                row[f"mean:{name}"], row[f"runs:{name}"] = means.get(name), len(cells[key].get(name, []))
                if name != names[0] and {name, names[0]} <= means.keys():
                    row[f"diff:{name}"] = means[name] - means[names[0]]
            rows.append(row)
    return Table(columns, rows)


def report_lines(matrices: dict[str, Matrix], data: Finals, axes: list[str], out: Path) -> list[str]:
    names = list(matrices)
    lines = [f"# Comparison of {' and '.join(f'`{n}`' for n in names)}", ""]
    lines += ["Each matrix's own report, and its runs (the first matrix is the reference of every difference):", ""]
    for name, matrix in matrices.items():
        link = os.path.relpath(matrix.path / REPORT, out)
        lines.append(f"- `{name}` ([report]({link})): {len(matrix.runs)} runs, {state_counts(matrix.runs)}")
    lines.append("")
    for metric, cells in sorted(data.items()):
        percent = _percent(matrices, metric)
        lines += [f"## Final {metric}" + (" (%)" if percent else ""), ""]
        lines += [*metric_table(cells, names, axes, percent), ""]
        unit = "percentage points" if percent else "the metric's units"
        lines += [
            f"Cells: final {metric}, mean ± sample standard deviation (ddof=1) over the done runs (seeds), their "
            f"number in parentheses. Δ: the difference of the means, in {unit}.",
            "",
        ]
    if not data:
        lines += ["No done run with a final value in any matrix yet.", ""]
    lines += [f"Every run of every matrix: `{RUNS_CSV}`; the tables' numbers unrounded: `{COMPARISON_CSV}`.", ""]
    return lines


def compare(dirs: Sequence[Path]) -> Path:
    """Write the comparison of the matrices in ``dirs`` (already drawn); returns its report's path."""
    names = labels(dirs)
    matrices = {name: matrix_mod.load(d) for name, d in zip(names, dirs, strict=True)}
    out = dirs[0].resolve().parent / f"compare-{'-'.join(names)}"
    writable_dir(out, "MATRIX", "make the first matrix's parent directory writable")
    axes = compared_axes(matrices)
    data = finals(matrices, axes)
    runs_table({name: m.runs for name, m in matrices.items()}).write_csv(out / RUNS_CSV)
    comparison_table(data, names, axes).write_csv(out / COMPARISON_CSV)
    report = out / REPORT
    atomic_write_text(report, "\n".join(report_lines(matrices, data, axes, out)))
    write_html(report)
    log.info("wrote the comparison of %s in %s", ", ".join(names), out)
    return report
