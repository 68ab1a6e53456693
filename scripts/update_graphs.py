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
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lib.errors import UserError, run_cli
from lib.results import (
    GRAPHS,
    LEDGER,
    REPORT,
    Run,
    atomic_write_bytes,
    atomic_write_text,
    load_runs,
    read_json,
    writable_dir,
)

log = logging.getLogger(__name__)

DENSE = "none"  # the pruning method of the dense baselines
# Axes that are not part of a line's identity: x of the vs-sparsity figures, and what seeds average over.
NOT_LINE_AXES = ("model", "target_sparsity", "seed")
# Axes named in labels by value alone; any other axis is written "name=value".
BARE_AXES = ("optimizer", "pruning")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")
SPARSE_LINESTYLES = ("-", ":", "-.")  # dashed is for the dense baselines
DPI = 110
MISSING = "—"


# ---------------------------------------------------------------------------------------------------------
# Reading runs


@dataclass
class LedgerRun(Run):
    """A run the ledger lists, with whatever its directory holds so far (nothing before it has started)."""

    ledger_state: str = "pending"


def load_matrix(matrix_dir: Path) -> list[Run]:
    """The ledger's runs and any run directory it does not list, sorted by run id."""
    dirs = {run.run_id: run for run in load_runs(matrix_dir)}
    try:
        entries = (read_json(matrix_dir / LEDGER) or {}).get("runs", [])
        listed = [(e["run_id"], e["config"], e["state"]) for e in entries]
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        log.warning("ignoring %s (%s: %s); reading the run directories only", matrix_dir / LEDGER, type(e).__name__, e)
        listed = []
    runs: list[Run] = []
    for run_id, config, state in listed:
        run = dirs.pop(run_id, None) or Run(matrix_dir / run_id, config, {}, None)
        runs.append(LedgerRun(**vars(run), ledger_state=state))
    return sorted(runs + list(dirs.values()), key=lambda r: r.run_id)


def run_state(run: Run) -> str:
    """The ledger's state of a run it lists (the runner's record). A run directory the ledger does not list:
    a summary (written once, at the end) outranks a status left by a killed process."""
    if isinstance(run, LedgerRun):
        return run.ledger_state
    if run.summary and run.summary.get("status") in ("done", "failed"):
        return run.summary["status"]
    return run.status.get("state", "pending")


def failure_reason(run: Run) -> str:
    reason = (run.summary or {}).get("reason") or run.status.get("reason") or "no reason recorded"
    return " ".join(str(reason).split())


def infer_metric(run: Run) -> str | None:
    """The eval metric of a run without a summary: the one eval key that is not bookkeeping."""
    keys = {k for r in run.metrics if r.get("split") == "eval" for k in r} - {"split", "step", "epoch"}
    others = sorted(keys - {"loss"})
    if len(others) == 1:
        return others[0]
    return "loss" if keys == {"loss"} else None


def run_metrics(runs: Sequence[Run]) -> dict[str, str | None]:
    """run id -> eval metric: the summary's, else a summarised run's of the same model, else inferred."""
    by_model: dict[Any, str] = {}
    for run in runs:
        if run.summary and run.summary.get("metric"):
            by_model.setdefault(run.axes.get("model"), run.summary["metric"])
    out = {}
    for run in runs:
        if run.summary and run.summary.get("metric"):
            out[run.run_id] = run.summary["metric"]
        else:
            out[run.run_id] = by_model.get(run.axes.get("model")) or infer_metric(run)
    return out


def final_value(run: Run, metric: str) -> float | None:
    final = (run.summary or {}).get("final") or {}
    value = final.get(metric)
    return None if value is None else float(value)


def best_value(run: Run, metric: str) -> tuple[float | None, int | None]:
    best = (run.summary or {}).get("best") or {}
    value = best.get(metric)
    return (None if value is None else float(value)), best.get("step")


def target_sparsity(run: Run) -> float | None:
    if run.axes.get("pruning") == DENSE:
        return 0.0
    value = run.axes.get("target_sparsity", (run.summary or {}).get("target_sparsity"))
    return None if value is None else float(value)


def matrix_name(runs: Sequence[Run], matrix_dir: Path) -> str:
    names = sorted({str(r.config["matrix"]) for r in runs if r.config.get("matrix")})
    return ", ".join(names) if names else matrix_dir.resolve().name


# ---------------------------------------------------------------------------------------------------------
# Numbers


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1); no std for a single value."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


@dataclass(frozen=True)
class MetricFormat:
    """How one metric is shown: accuracies-like metrics (mode "max", values in [0, 1]) as percentages."""

    name: str
    percent: bool

    @property
    def scale(self) -> float:
        return 100.0 if self.percent else 1.0

    def label(self, prefix: str = "") -> str:
        return f"{prefix}{self.name}" + (" (%)" if self.percent else "")

    def number(self, value: float | None) -> str:
        """A value in the metric's own units (a fraction for a percentage metric)."""
        if value is None:
            return MISSING
        return _num(value * self.scale, self.percent)

    def mean_std(self, values: Sequence[float]) -> str:
        mean, std = mean_std([v * self.scale for v in values])
        text = _num(mean, self.percent)
        return text if std is None else f"{text} ± {_num(std, self.percent)}"


def _num(value: float, percent: bool) -> str:
    return f"{value:.2f}" if percent else f"{value:#.4g}"  # "#": keep trailing zeros


def metric_formats(runs: Sequence[Run], metrics: dict[str, str | None]) -> dict[str, MetricFormat]:
    modes: dict[str, set] = defaultdict(set)
    values: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        metric = metrics[run.run_id]
        if metric is None:
            continue
        if run.summary:
            modes[metric].add(run.summary.get("metric_mode"))
        values[metric] += [v for v in (final_value(run, metric), best_value(run, metric)[0]) if v is not None]
        values[metric] += run.series("eval", metric)[1]
    formats = {}
    for metric in sorted(values.keys() | modes.keys()):
        finite = [v for v in values[metric] if v is not None and math.isfinite(v)]
        percent = modes[metric] == {"max"} and bool(finite) and all(0.0 <= v <= 1.0 for v in finite)
        formats[metric] = MetricFormat(metric, percent)
    return formats


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    return MISSING if value is None else format(value * scale, spec)


# ---------------------------------------------------------------------------------------------------------
# Grouping for the vs-sparsity figures and tables


def _sort_value(axis: str, value: Any) -> tuple:
    if axis == "pruning" and value == DENSE:
        return (0, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, value, "")
    return (2, 0, str(value))


@dataclass
class SparsityGroup:
    """The done runs of one model and metric, by line (values of ``axes``) and target sparsity."""

    model: Any
    fmt: MetricFormat
    axes: list[str]
    cells: dict[tuple, dict[float, list[float]]] = field(default_factory=dict)

    def row_label(self, key: tuple, skip: Iterable[str] = ()) -> str:
        parts = [
            str(v) if a in BARE_AXES else f"{a}={v}"
            for a, v in zip(self.axes, key, strict=True)
            if a not in skip and v is not None  # an axis that does not apply to this line (e.g. variant)
        ]
        return " ".join(parts)

    def colour_key(self, key: tuple) -> tuple:
        return tuple(v for a, v in zip(self.axes, key, strict=True) if a != "pruning")

    def is_dense(self, key: tuple) -> bool:
        return "pruning" in self.axes and key[self.axes.index("pruning")] == DENSE

    def sparsities(self) -> list[float]:
        return sorted({s for row in self.cells.values() for s in row})

    def rows(self) -> list[tuple]:
        return sorted(self.cells, key=lambda k: tuple(_sort_value(a, v) for a, v in zip(self.axes, k, strict=True)))


def ordered_axes(runs: Sequence[Run]) -> list[str]:
    """Axis names in the order the configs list them."""
    names: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(run.axes))
    return list(names)


def sparsity_groups(
    runs: Sequence[Run], metrics: dict[str, str | None], formats: dict[str, MetricFormat]
) -> list[SparsityGroup]:
    """One group per (model, metric). Line axes are the other axes that vary, plus optimizer and pruning."""
    done: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        metric = metrics[run.run_id]
        if run_state(run) == "done" and metric is not None and final_value(run, metric) is not None:
            done[(run.axes.get("model"), metric)].append(run)
    groups = []
    for (model, metric), group_runs in sorted(done.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        axes = [
            a
            for a in ordered_axes(group_runs)
            if a not in NOT_LINE_AXES and (a in BARE_AXES or len({str(r.axes.get(a)) for r in group_runs}) > 1)
        ]
        group = SparsityGroup(model, formats[metric], axes)
        for run in group_runs:
            sparsity = target_sparsity(run)
            if sparsity is None:
                log.info("%s: no target sparsity, left out of the vs-sparsity figure", run.run_id)
                continue
            key = tuple(run.axes.get(a) for a in axes)
            group.cells.setdefault(key, {}).setdefault(sparsity, []).append(final_value(run, metric))
        if group.cells:
            groups.append(group)
    return groups


# ---------------------------------------------------------------------------------------------------------
# Banded MLP comparisons

BAND_AXES = ("fc1_band", "fc2_band")
# The axes a banded comparison spans; the others (optimizer, gate, lr, ...) pick out the baseline it is against.
BANDED_SPAN = ("pruning", *BAND_AXES, "target_sparsity", "seed")
BAND_CONFIGS = (("FC1", lambda w: (w, 0)), ("FC2", lambda w: (0, w)), ("FC1+FC2", lambda w: (w, w)))


@dataclass
class BandedGroup:
    """Dense baseline and banded runs (seeds together) that differ only in the band widths."""

    label: str  # the other varying axes, "name=value ..."; "" when the matrix has one group
    fmt: MetricFormat
    baseline: list[Run]
    banded: dict[tuple[int, int], list[Run]]  # (FC1 width, FC2 width), 0 = dense -> runs

    def widths(self) -> list[int]:
        return sorted({w for pair in self.banded for w in pair if w}, reverse=True)

    def columns(self, width: int) -> list[tuple[str, list[Run]]]:
        cells = [(name, self.banded.get(pair(width))) for name, pair in BAND_CONFIGS]
        return [("baseline", self.baseline), *((name, runs) for name, runs in cells if runs)]


def _band(run: Run) -> tuple[int, int]:
    return tuple(int(run.axes.get(a) or 0) for a in BAND_AXES)


def banded_groups(runs: Sequence[Run], metrics: dict[str, str | None], formats: dict[str, MetricFormat]):
    """One group per eval metric and combination of the non-band axes that has banded runs."""
    relevant = [r for r in runs if r.axes.get("pruning") in ("banded", DENSE) and metrics[r.run_id] is not None]
    others = [
        a for a in ordered_axes(relevant) if a not in BANDED_SPAN and len({str(r.axes.get(a)) for r in relevant}) > 1
    ]
    groups: dict[tuple, BandedGroup] = {}
    for run in relevant:
        metric, values = metrics[run.run_id], tuple(run.axes.get(a) for a in others)
        label = " ".join(f"{a}={v}" for a, v in zip(others, values, strict=True) if v is not None)
        group = groups.setdefault((metric, values), BandedGroup(label, formats[metric], [], {}))
        if run.axes.get("pruning") == DENSE:
            group.baseline.append(run)
        else:
            group.banded.setdefault(_band(run), []).append(run)
    return [g for _, g in sorted(groups.items(), key=lambda kv: str(kv[0])) if g.banded]


def _mean(values: Sequence[float]) -> float | None:
    return mean_std(values)[0] if values else None


def _summary_mean(runs: Sequence[Run], key: str) -> float | None:
    return _mean([r.summary[key] for r in runs if r.summary and r.summary.get(key) is not None])


def banded_checkpoint_table(group: BandedGroup, width: int) -> list[str]:
    """Rows: the evaluation steps; columns: baseline, FC1, FC2, FC1+FC2 at ``width``; cells: mean over seeds."""
    metric = group.fmt.name
    columns = [
        (name, [dict(zip(*r.series("eval", metric), strict=True)) for r in rs]) for name, rs in group.columns(width)
    ]
    steps = sorted({step for _, series in columns for s in series for step in s})
    rows = [
        [step, *(group.fmt.number(_mean([s[step] for s in series if step in s])) for _, series in columns)]
        for step in steps
    ]
    return md_table(["step", *(name for name, _ in columns)], rows)


def banded_final_table(group: BandedGroup) -> list[str]:
    """Baseline, then each width's FC1 / FC2 / FC1+FC2, then any other (FC1, FC2) pair: the final metric of the
    done runs (mean over seeds) and its change relative to the baseline."""
    metric = group.fmt.name

    def finals(runs: Sequence[Run]) -> list[float]:
        return [v for r in runs if run_state(r) == "done" and (v := final_value(r, metric)) is not None]

    order = [(name, pair(w)) for w in group.widths() for name, pair in BAND_CONFIGS if pair(w) in group.banded]
    listed = {pair for _, pair in order}
    order += [(f"FC1 {a} / FC2 {b}", (a, b)) for a, b in sorted(group.banded) if (a, b) not in listed]
    base = _mean(finals(group.baseline))
    rows = [["baseline", "dense", "dense", _fmt(_summary_mean(group.baseline, "sparsity"), ".2f", 100.0)]]
    rows[0] += [group.fmt.number(base), MISSING]
    for name, (fc1, fc2) in order:
        runs = group.banded[(fc1, fc2)]
        value = _mean(finals(runs))
        delta = MISSING if value is None or not base else f"{100 * (value - base) / base:+.2f}%"
        sparsity = _fmt(_summary_mean(runs, "sparsity"), ".2f", 100.0)
        rows.append([name, fc1 or "dense", fc2 or "dense", sparsity, group.fmt.number(value), delta])
    header = ["run", "FC1 width", "FC2 width", "sparsity (%)", group.fmt.label("final "), "Δ vs baseline"]
    return md_table(header, rows)


def banded_section(groups: Sequence[BandedGroup]) -> list[str]:
    if not groups:
        return []
    lines = [
        "## Banded MLP",
        "",
        "Validation metric at each evaluation, mean over seeds; columns are the dense baseline and FC1 / FC2 /"
        " FC1+FC2 banded at one width. Δ is relative to the baseline's final value.",
        "",
    ]
    for group in groups:
        suffix = f" — {group.label}" if group.label else ""
        for width in group.widths():
            if len(group.columns(width)) > 1:
                lines += [
                    f"### Bandwidth {width}: eval {group.fmt.label()}{suffix}",
                    "",
                    *banded_checkpoint_table(group, width),
                    "",
                ]
        lines += [f"### Final eval {group.fmt.label()}{suffix}", "", *banded_final_table(group), ""]
    return lines


# ---------------------------------------------------------------------------------------------------------
# Text samples (GPT-2 runs with GPT2_REPORT_SAMPLE_TOKENS > 0)


def report_samples(runs: Sequence[Run]) -> list[tuple[Run, str]]:
    """(run, sample text or why there is none) for each done run whose config asks for a sample."""
    wanted = [r for r in runs if run_state(r) == "done" and r.config["values"].get("GPT2_REPORT_SAMPLE_TOKENS")]
    if not wanted:
        return []
    from scripts.sample import report_sample  # torch: only when a run asks for samples

    out = []
    for run in wanted:
        values = run.config["values"]
        best_step = ((run.summary or {}).get("best") or {}).get("step")
        try:
            text = report_sample(
                run.path, values.get("GPT2_REPORT_SAMPLE_PROMPT") or "", values["GPT2_REPORT_SAMPLE_TOKENS"], best_step
            )
        except (UserError, OSError, RuntimeError) as exc:  # the rest of the report is still written
            log.warning("%s: no sample: %s", run.run_id, exc)
            text = f"(no sample: {exc})"
        out.append((run, text))
    return out


def samples_section(samples: Sequence[tuple[Run, str]]) -> list[str]:
    if not samples:
        return []
    prompt = samples[0][0].config["values"].get("GPT2_REPORT_SAMPLE_PROMPT") or ""
    lines = [
        "## Samples",
        "",
        f"Each done run's best checkpoint continues the prompt {prompt!r} with `make sample`'s default seed,"
        " temperature and top-k; `make sample RUN=<run dir>` draws more.",
        "",
    ]
    for run, text in samples:
        fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
        lines += [f"### `{run.run_id}`", "", f"{fence}text", text, fence, ""]
    return lines


# ---------------------------------------------------------------------------------------------------------
# Figures


def safe_name(text: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text))


def new_figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas, outside pyplot so nothing global accumulates."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    log.debug("wrote %s", path)


def run_style(i: int) -> dict:
    """Distinct colour and line style for the i-th of many runs."""
    return {"color": f"C{i % 10}", "linestyle": LINESTYLES[(i // 10) % len(LINESTYLES)]}


def scaled(values: Sequence[float], fmt: MetricFormat | None) -> list[float]:
    scale = fmt.scale if fmt else 1.0
    return [v * scale for v in values]


def plot_run_curves(run: Run, fmt: MetricFormat | None, path: Path) -> bool:
    """Train loss (LR on a twin axis) | eval metric, vs step. False, and nothing written, with no rows."""
    if not run.metrics:
        log.info("%s: no metrics yet, no curves drawn", run.run_id)
        return False
    fig = new_figure(12, 4.2)
    ax_loss, ax_metric = fig.subplots(1, 2)
    handles = []
    steps, loss = run.series("train", "loss")
    handles += ax_loss.plot(steps, loss, color="C0", lw=1.2, label="train loss")
    steps, loss = run.series("eval", "loss")
    if steps:
        handles += ax_loss.plot(steps, loss, "o-", color="C1", ms=3, lw=1.2, label="eval loss")
    steps, lr = run.series("train", "lr")
    if steps:
        ax_lr = ax_loss.twinx()
        handles += ax_lr.plot(steps, lr, color="C2", lw=1, alpha=0.7, label="learning rate")
        ax_lr.set_ylabel("learning rate")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss")
    ax_loss.grid(alpha=0.3)
    if handles:  # below the axes: a twin axis's curve would otherwise hide under it
        ax_loss.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=3, fontsize="small")

    metric = fmt.name if fmt else None
    steps, values = run.series("eval", metric) if metric else ([], [])
    if steps:
        ax_metric.plot(steps, scaled(values, fmt), "o-", color="C3", ms=3, lw=1.2)
    else:
        ax_metric.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax_metric.transAxes)
    ax_metric.set_xlabel("step")
    ax_metric.set_ylabel(fmt.label("eval ") if fmt else "eval metric")
    ax_metric.set_title(f"eval {metric}" if metric else "eval")
    ax_metric.grid(alpha=0.3)
    fig.suptitle(f"{run.run_id}  [{run_state(run)}]")
    save(fig, path)
    return True


def plot_overlay(
    series: list[tuple[str, list[int], list[float]]], ylabel: str, title: str, path: Path, marker: str = ""
) -> None:
    """Every run's curve on one axis; the legend (run ids) outside, right."""
    fig = new_figure(12, 5.5)
    ax = fig.subplots()
    for i, (label, steps, values) in enumerate(series):
        ax.plot(steps, values, lw=1.1, marker=marker, ms=3, label=label, **run_style(i))
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize="x-small", ncols=max(1, math.ceil(len(series) / 30)))
    save(fig, path)


def plot_vs_sparsity(group: SparsityGroup, title: str, path: Path) -> None:
    fmt = group.fmt
    fig = new_figure(10, 5.5)
    ax = fig.subplots()
    colours: dict[tuple, str] = {}
    styles: dict[Any, int] = {}  # pruning method -> index of its marker and line style
    for key in group.rows():
        colour = colours.setdefault(group.colour_key(key), f"C{len(colours) % 10}")
        row = group.cells[key]
        if group.is_dense(key):
            values = [v for vs in row.values() for v in vs]
            mean, std = mean_std(scaled(values, fmt))
            label = f"{group.row_label(key, skip=('pruning',))} dense (n={len(values)})".strip()
            ax.axhline(mean, color=colour, linestyle="--", lw=1.3, label=label)
            if std is not None:
                ax.axhspan(mean - std, mean + std, color=colour, alpha=0.12, lw=0)
            continue
        pruning = key[group.axes.index("pruning")] if "pruning" in group.axes else None
        style = styles.setdefault(pruning, len(styles))
        xs = sorted(row)
        stats = [mean_std(scaled(row[x], fmt)) for x in xs]
        counts = sorted({len(row[x]) for x in xs})
        n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        yerr = [s if s is not None else 0.0 for _, s in stats]
        ax.errorbar(
            [100 * x for x in xs],
            [m for m, _ in stats],
            yerr=yerr if any(yerr) else None,
            color=colour,
            marker=MARKERS[style % len(MARKERS)],
            linestyle=SPARSE_LINESTYLES[style % len(SPARSE_LINESTYLES)],
            ms=6,
            lw=1.5,
            capsize=3,
            label=f"{group.row_label(key)} (n={n})",
        )
    sparsities = group.sparsities()
    ax.set_xticks([100 * s for s in sparsities])
    ax.set_xticklabels([f"{100 * s:g}" for s in sparsities])
    ax.set_xlim(100 * min(sparsities) - 5, 100 * max(sparsities) + 5)
    ax.set_xlabel("target sparsity (%)")
    ax.set_ylabel(fmt.label("final "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize="small")
    save(fig, path)


# ---------------------------------------------------------------------------------------------------------
# Report


def md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return lines


def status_text(run: Run) -> str:
    state = run_state(run)
    if state == "running" and run.status.get("total_steps"):
        return f"running ({run.status.get('step', 0)}/{run.status['total_steps']})"
    return state


def runs_table(
    runs: Sequence[Run], metrics: dict[str, str | None], formats: dict[str, MetricFormat], curves: set[str]
) -> list[str]:
    used = sorted({m for m in metrics.values() if m is not None})
    single = formats[used[0]] if len(used) == 1 else None
    header = [
        "run",
        "status",
        single.label("final ") if single else "final",
        (single.label("best ") if single else "best") + " @ step",
        "sparsity (%)",
        "train time (s)",
        "peak memory (MiB)",
        "throughput (samples/s)",
        "curves",
    ]
    rows = []
    for run in runs:
        metric = metrics[run.run_id]
        summary = run.summary or {}
        final = best = MISSING
        if metric is not None:
            fmt = formats[metric]
            prefix = "" if single else f"{fmt.label()}: "
            value = final_value(run, metric)
            final = MISSING if value is None else prefix + fmt.number(value)
            value, step = best_value(run, metric)
            if value is not None:
                best = prefix + fmt.number(value) + (f" @ {step}" if step is not None else "")
        memory = summary.get("peak_memory_bytes")
        rows.append(
            [
                f"`{run.run_id}`",
                status_text(run),
                final,
                best,
                _fmt(summary.get("sparsity"), ".2f", 100.0),
                _fmt(summary.get("train_seconds"), ".1f"),
                _fmt(None if memory is None else memory / 2**20, ".1f"),
                _fmt(summary.get("throughput"), ".1f"),
                f"[png]({GRAPHS}/curves-{safe_name(run.run_id)}.png)" if run.run_id in curves else MISSING,
            ]
        )
    return md_table(header, rows)


def sparsity_table(group: SparsityGroup) -> list[str]:
    """Rows: the line axes; columns: target sparsities; cells: mean ± std of the final metric over seeds."""
    sparsities = group.sparsities()
    counts = {len(vs) for row in group.cells.values() for vs in row.values()}
    rows = []
    for key in group.rows():
        cells = []
        for s in sparsities:
            values = group.cells[key].get(s)
            if not values:
                cells.append(MISSING)
                continue
            text = group.fmt.mean_std(values)
            cells.append(text if len(counts) == 1 else f"{text} (n={len(values)})")
        rows.append([*(MISSING if v is None else str(v) for v in key), *cells])
    header = [*group.axes, *(f"{100 * s:g}%" for s in sparsities)]
    if len(counts) > 1:
        seeds = "over the n seeds shown"
    else:
        (n,) = counts
        seeds = f"over {n} seed{'s' if n > 1 else ''}"
    note = f"Cells: final {group.fmt.label()}, mean {seeds}"
    if max(counts) > 1:
        note += "; ± is the sample standard deviation (ddof=1)"
    return [*md_table(header, rows), "", note + "."]


def state_counts(runs: Sequence[Run]) -> str:
    """Runs per state, e.g. "12 done · 1 failed · 0 running · 1 pending", then any other (interrupted)."""
    states = Counter(run_state(r) for r in runs)
    order = ["done", "failed", "running", "pending"]
    counts = [f"{states[s]} {s}" for s in order] + [f"{n} {s}" for s, n in sorted(states.items()) if s not in order]
    return " · ".join(counts)


def write_report(
    matrix_dir: Path,
    name: str,
    runs: Sequence[Run],
    metrics: dict[str, str | None],
    formats: dict[str, MetricFormat],
    groups: list[tuple[SparsityGroup, str]],
    overlays: list[tuple[str, str]],
    curves: set[str],
    several_models: bool,
    banded: Sequence[BandedGroup] = (),
    samples: Sequence[tuple[Run, str]] = (),
) -> Path:
    descriptions = sorted({r.config["values"].get("MATRIX_DESCRIPTION") or "" for r in runs} - {""})
    lines = [
        f"# Matrix `{name}`",
        "",
        *[f"> {d}\n" for d in descriptions],
        f"**{len(runs)} runs:** " + state_counts(runs),
        "",
        "Everything below is computed from the ledger and the run directories by `python -m scripts.update_graphs`;"
        " re-run it to refresh.",
        "",
    ]
    if groups:
        lines += ["## Final metric vs target sparsity", ""]
        for _, file in groups:
            lines += [f"![{file}]({GRAPHS}/{file})", ""]
        lines += ["## Sparsity", ""]
        for group, _ in groups:
            heading = f"final {group.fmt.label()}" + (f" — {group.model}" if several_models else "")
            lines += [f"### {heading}", "", *sparsity_table(group), ""]
    lines += banded_section(banded)
    if overlays:
        lines += ["## Training curves", ""]
        for title, file in overlays:
            lines += [f"![{title}]({GRAPHS}/{file})", ""]
    lines += ["## Runs", "", *runs_table(runs, metrics, formats, curves), ""]
    failed = [r for r in runs if run_state(r) == "failed"]
    lines += ["## Failed runs", ""]
    lines += [f"- `{r.run_id}`: {failure_reason(r)}" for r in failed] if failed else ["None."]
    lines.append("")
    lines += samples_section(samples)
    if curves:
        lines += ["## Per-run curves", ""]
        for run in runs:
            if run.run_id in curves:
                lines += [
                    f"### `{run.run_id}`",
                    "",
                    f"![{run.run_id}]({GRAPHS}/curves-{safe_name(run.run_id)}.png)",
                    "",
                ]
    path = matrix_dir / REPORT
    atomic_write_text(path, "\n".join(lines))
    log.info("wrote %s", path)
    return path


# ---------------------------------------------------------------------------------------------------------
# Entry point


def resolve_matrix(matrix: str | None, results: str) -> Path:
    if matrix is None:
        path = Path(results) / "latest"
        if not path.is_dir():
            raise UserError(
                f"no matrix at {path} (the link to the newest matrix): run `make` first, "
                f"or pass MATRIX=<dir> (--matrix <dir>) naming a matrix directory under {results}/"
            )
        return path
    path = Path(matrix)
    if not path.is_dir():
        raise UserError(
            f"matrix directory {path} does not exist: pass MATRIX=<dir> (--matrix <dir>) naming a directory "
            f"under {results}/, or run `make` first"
        )
    return path


def update_graphs(matrix_dir: Path) -> Path:
    """Write every graph and the report of ``matrix_dir``; returns the report's path."""
    runs = load_matrix(matrix_dir)
    if not runs:
        raise UserError(
            f"no runs in {matrix_dir} (no run in a {LEDGER}, no subdirectory with a config.json): run `make` first, "
            "or pass MATRIX=<dir> naming a matrix directory"
        )
    name = matrix_name(runs, matrix_dir)
    metrics = run_metrics(runs)
    formats = metric_formats(runs, metrics)
    fix = "make it writable, or copy the matrix somewhere writable and `make update-graphs MATRIX=<copy>`"
    writable_dir(matrix_dir, "MATRIX", fix)
    graphs = writable_dir(matrix_dir / GRAPHS, "MATRIX", fix)
    log.info("matrix %s: %d runs (%s) in %s", name, len(runs), state_counts(runs), matrix_dir)

    curves = set()
    for run in runs:
        metric = metrics[run.run_id]
        if plot_run_curves(
            run, formats.get(metric) if metric else None, graphs / f"curves-{safe_name(run.run_id)}.png"
        ):
            curves.add(run.run_id)

    overlays = []
    for metric, fmt in formats.items():
        series = []
        for run in runs:
            steps, values = run.series("eval", metric)
            if metrics[run.run_id] == metric and steps:
                series.append((run.run_id, steps, scaled(values, fmt)))
        if series:
            file = f"eval-{safe_name(metric)}.png"
            plot_overlay(series, fmt.label("eval "), f"{name}: eval {metric}", graphs / file, marker="o")
            overlays.append((f"eval {metric}", file))
    series = [(run.run_id, *run.series("train", "loss")) for run in runs if run.series("train", "loss")[0]]
    if series:
        plot_overlay(series, "train loss", f"{name}: train loss", graphs / "train-loss.png")
        overlays.append(("train loss", "train-loss.png"))

    groups = sparsity_groups(runs, metrics, formats)
    # From every run, not just the done ones, so a figure's name does not change as runs finish.
    several_models = len({str(r.axes.get("model")) for r in runs}) > 1
    drawn = []
    for group in groups:
        suffix = f"-{safe_name(group.model)}" if several_models else ""
        file = f"{safe_name(group.fmt.name)}-vs-sparsity{suffix}.png"
        title = f"{name}: final {group.fmt.name} vs target sparsity" + (f" — {group.model}" if several_models else "")
        plot_vs_sparsity(group, title, graphs / file)
        drawn.append((group, file))
    if not drawn:
        log.info("no done run with a final metric yet: no vs-sparsity figure")

    log.info("%d graphs in %s", len(curves) + len(overlays) + len(drawn), graphs)
    banded = banded_groups(runs, metrics, formats)
    samples = report_samples(runs)
    return write_report(
        matrix_dir, name, runs, metrics, formats, drawn, overlays, curves, several_models, banded, samples
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--matrix", metavar="DIR", help="matrix directory (default: <results>/latest)")
    parser.add_argument("--results", metavar="DIR", default="results", help="results root (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    update_graphs(resolve_matrix(args.matrix, args.results))
    return 0


if __name__ == "__main__":
    run_cli(main)
