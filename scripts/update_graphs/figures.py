"""The figures: one run's curves, every run's curves overlaid, final metric vs target sparsity; and how every
figure is made and written.

A plot function returns its :class:`~matplotlib.figure.Figure` (None: nothing to draw), drawn on the Agg canvas
outside pyplot (nothing global accumulates); :meth:`Report.draw <scripts.update_graphs.report.Report.draw>`
writes it, atomically, in each of GRAPH_FORMATS. Methods are coloured by the report's one palette
(:class:`~scripts.update_graphs.grouping.Methods`)."""

from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lib.results import Run, atomic_write_bytes
from scripts.update_graphs.grouping import Methods, SparsityGroup
from scripts.update_graphs.numbers import MetricFormat, mean_std, scaled

log = logging.getLogger(__name__)

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
SPARSE_LINESTYLES = ("-", ":", "-.")  # dashed is for the dense baselines
DENSE_MARKER = "D"
SPARSE_MARKERS = tuple(m for m in MARKERS if m != DENSE_MARKER)
DPI = 110
# Leave out what changes with each write (the date) so that an unchanged figure is an unchanged file.
METADATA: dict[str, dict | None] = {"png": None, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


def safe_name(text: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text))


def curves_file(run: Run) -> str:
    """The file name, without its format's suffix, of a run's own curves in ``graphs/``."""
    return f"curves-{safe_name(run.run_id)}"


def new_figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas, outside pyplot so nothing global accumulates."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, stem: Path, formats: Sequence[str]) -> None:
    """``fig`` as ``<stem>.<format>`` for each format (png, svg, pdf)."""
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=DPI, metadata=METADATA[fmt])
        path = stem.with_name(f"{stem.name}.{fmt}")
        atomic_write_bytes(path, buf.getvalue())
        log.debug("wrote %s", path)


def outside_legend(fig: Figure, handles: list | None = None, title: str | None = None) -> None:
    """The figure's legend outside the axes, right, so it covers no data."""
    kwargs = {} if handles is None else {"handles": handles}
    fig.legend(loc="outside right upper", fontsize="small", title=title, **kwargs)


def method_legend(fig: Figure, methods: Methods, labels: Iterable[str]) -> None:
    """A legend of the methods drawn (a colour patch each), outside the axes."""
    handles = [Patch(color=methods.colours[m], label=m) for m in methods.order(labels)]
    outside_legend(fig, handles, title="method")


def _loss_axis(ax: Axes, run: Run) -> None:
    """Train and eval loss, the learning rate on a twin axis, one legend below."""
    handles = []
    steps, loss = run.series("train", "loss")
    handles += ax.plot(steps, loss, color="C0", lw=1.2, label="train loss")
    steps, loss = run.series("eval", "loss")
    if steps:
        handles += ax.plot(steps, loss, "o-", color="C1", ms=3, lw=1.2, label="eval loss")
    steps, lr = run.series("train", "lr")
    if steps:
        ax_lr = ax.twinx()
        handles += ax_lr.plot(steps, lr, color="C2", lw=1, alpha=0.7, label="learning rate")
        ax_lr.set_ylabel("learning rate")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("loss")
    ax.grid(alpha=0.3)
    if handles:  # below the axes: a twin axis's curve would otherwise hide under it
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=3, fontsize="small")


def _metric_axis(ax: Axes, run: Run, fmt: MetricFormat | None) -> None:
    metric = fmt.name if fmt else None
    steps, values = run.series("eval", metric) if metric else ([], [])
    if steps:
        ax.plot(steps, scaled(values, fmt), "o-", color="C3", ms=3, lw=1.2)
    else:
        ax.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("step")
    ax.set_ylabel(fmt.label("eval ") if fmt else "eval metric")
    ax.set_title(f"eval {metric}" if metric else "eval")
    ax.grid(alpha=0.3)


def plot_run_curves(run: Run, fmt: MetricFormat | None) -> Figure | None:
    """Train loss (LR on a twin axis) | eval metric, vs step. None with no rows."""
    if not run.metrics:
        log.info("%s: no metrics yet, no curves drawn", run.run_id)
        return None
    fig = new_figure(12, 4.2)
    ax_loss, ax_metric = fig.subplots(1, 2)
    _loss_axis(ax_loss, run)
    _metric_axis(ax_metric, run, fmt)
    fig.suptitle(f"{run.run_id}  [{run.state}]")
    return fig


def plot_overlay(
    series: list[tuple[str, list[int], list[float], dict]], ylabel: str, title: str, marker: bool = False
) -> Figure:
    """Every run's curve on one axis, each in the style given (its method's colour); the legend (run ids)
    outside, right."""
    fig = new_figure(12, 5.5)
    ax = fig.subplots()
    for label, steps, values, style in series:
        style = style if marker else {**style, "marker": ""}
        ax.plot(steps, values, lw=1.1, ms=3, label=label, gid=label, **style)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside right upper", fontsize="x-small", ncols=max(1, math.ceil(len(series) / 30)))
    return fig


def cell_id(method: str, sparsity: float, panel: str = "") -> str:
    """The gid of what a figure draws for one (method, target sparsity): a handle to read it back by (and its id
    in an svg)."""
    return f"{panel}{method} @ {100 * sparsity:g}%"


def style_of(methods: Methods, method: str, sparsities: Sequence[float], sparsity: float) -> dict:
    """The method's colour; dashed for a dense baseline (target sparsity 0), else a line style and marker per
    target sparsity."""
    if sparsity == 0:
        return {"color": methods.colours[method], "linestyle": "--", "marker": DENSE_MARKER}
    i = sorted({s for s in sparsities if s}).index(sparsity)
    return {
        "color": methods.colours[method],
        "linestyle": SPARSE_LINESTYLES[i % len(SPARSE_LINESTYLES)],
        "marker": SPARSE_MARKERS[i % len(SPARSE_MARKERS)],
    }


def _dense_line(ax: Axes, group: SparsityGroup, key: tuple, colour: str) -> None:
    """A dense baseline: a dashed horizontal line at its mean over every seed, a band of ± one std."""
    values = [v for vs in group.cells[key].values() for v in vs]
    mean, std = mean_std(scaled(values, group.fmt))
    method = group.methods[key]
    ax.axhline(mean, color=colour, linestyle="--", lw=1.3, label=f"{method} (n={len(values)})", gid=method)
    if std is not None:
        ax.axhspan(mean - std, mean + std, color=colour, alpha=0.12, lw=0, gid=f"{method} ±std")


def _sparse_line(ax: Axes, group: SparsityGroup, key: tuple, colour: str, style: int) -> None:
    """A pruned line: mean over seeds per target sparsity, with the std as error bars."""
    row = group.cells[key]
    xs = sorted(row)
    stats = [mean_std(scaled(row[x], group.fmt)) for x in xs]
    counts = sorted({len(row[x]) for x in xs})
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    yerr = [s if s is not None else 0.0 for _, s in stats]
    drawn = ax.errorbar(
        [100 * x for x in xs],
        [m for m, _ in stats],
        yerr=yerr if any(yerr) else None,
        color=colour,
        marker=MARKERS[style % len(MARKERS)],
        linestyle=SPARSE_LINESTYLES[style % len(SPARSE_LINESTYLES)],
        ms=6,
        lw=1.5,
        capsize=3,
        label=f"{group.methods[key]} (n={n})",
    )
    drawn.lines[0].set_gid(group.methods[key])
    if drawn.lines[2]:
        drawn.lines[2][0].set_gid(f"{group.methods[key]} ±std")


def plot_vs_sparsity(group: SparsityGroup, title: str, methods: Methods) -> Figure:
    """Final metric vs target sparsity, one line per method (its colour in every figure; a marker and line
    style per pruning method), the dense baselines as dashed reference lines with a band of ± one std."""
    fig = new_figure(10, 5.5)
    ax = fig.subplots()
    styles: dict[Any, int] = {}  # pruning method -> index of its marker and line style
    for key in group.rows():
        colour = methods.colours[group.methods[key]]
        if group.is_dense(key):
            _dense_line(ax, group, key, colour)
        else:
            _sparse_line(ax, group, key, colour, styles.setdefault(group.pruning(key), len(styles)))
    sparsities = group.sparsities()
    ax.set_xticks([100 * s for s in sparsities])
    ax.set_xticklabels([f"{100 * s:g}" for s in sparsities])
    ax.set_xlim(100 * min(sparsities) - 5, 100 * max(sparsities) + 5)
    ax.set_xlabel("target sparsity (%)")
    ax.set_ylabel(group.fmt.label("final "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    outside_legend(fig, title="method (seeds)")
    return fig
