"""Chart pieces the comparison figures share: bars per (method, target sparsity) with the seeds' mean and
standard deviation, a ranking of such bars, and a mean curve over seeds with its ± std band.

Every bar, curve and band carries a gid (:func:`~scripts.update_graphs.figures.cell_id`): what was drawn for a
(method, sparsity) can be read back from the figure by it."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes

from scripts.update_graphs.figures import cell_id
from scripts.update_graphs.grouping import Cells, Methods
from scripts.update_graphs.numbers import mean_std

GROUP_WIDTH = 0.8  # of the unit between two target sparsities, shared by their bars


def sparsity_text(sparsity: float) -> str:
    return f"{100 * sparsity:g}%"


def bar(ax: Axes, x: float, values: Sequence[float], colour: str, gid: str, width: float) -> None:
    """One bar at the mean of ``values``, with their sample std (ddof=1) as an error bar when there are two or
    more; the bar's gid is ``gid``, its error bar's ``gid + " ±std"``."""
    mean, std = mean_std(values)
    drawn = ax.bar(x, mean, width, yerr=std, color=colour, ecolor="0.25", capsize=3, gid=gid)
    if drawn.errorbar is not None:
        drawn.errorbar.lines[2][0].set_gid(f"{gid} ±std")


def grouped_bars(ax: Axes, cells: Cells, methods: Methods, panel: str = "") -> None:
    """Bars grouped by target sparsity (x), one per method present at it, in the method's colour."""
    sparsities = sorted({s for _, s in cells})
    for i, sparsity in enumerate(sparsities):
        present = [(m, values) for (m, s), values in cells.items() if s == sparsity]  # in display order
        width = GROUP_WIDTH / len(present)
        for j, (method, values) in enumerate(present):
            x = i - GROUP_WIDTH / 2 + width * (j + 0.5)
            bar(ax, x, values, methods.colours[method], cell_id(method, sparsity, panel), width)
    ax.set_xticks(range(len(sparsities)), [sparsity_text(s) for s in sparsities])
    ax.set_xlabel("target sparsity (%)")
    ax.grid(axis="y", alpha=0.3)


def ranked(cells: Cells) -> list[tuple[tuple[str, float], list[float]]]:
    """The cells, highest mean first."""
    return sorted(cells.items(), key=lambda kv: -mean_std(kv[1])[0])


def ranked_bars(ax: Axes, cells: Cells, methods: Methods) -> None:
    """Horizontal bars, highest mean on top, each labelled with its method and target sparsity."""
    order = ranked(cells)
    for y, ((method, sparsity), values) in enumerate(order):
        mean, std = mean_std(values)
        gid = cell_id(method, sparsity)
        drawn = ax.barh(y, mean, 0.7, xerr=std, color=methods.colours[method], ecolor="0.25", capsize=3, gid=gid)
        if drawn.errorbar is not None:
            drawn.errorbar.lines[2][0].set_gid(f"{gid} ±std")
    ax.set_yticks(range(len(order)), [f"{m} @ {sparsity_text(s)}" for (m, s), _ in order])
    ax.invert_yaxis()  # the best on top
    ax.grid(axis="x", alpha=0.3)


def common_steps(series: Sequence[tuple[list[int], list[float]]]) -> list[int]:
    """The steps every one of ``series`` has a value at."""
    steps = set(series[0][0])
    for s, _ in series[1:]:
        steps &= set(s)
    return sorted(steps)


def mean_curve(ax: Axes, series: Sequence[tuple[list[int], list[float]]], style: dict, label: str, gid: str) -> None:
    """The mean over ``series`` (one per seed) at the steps they share, with a band of ± one std (ddof=1) when
    there are two or more."""
    steps = common_steps(series)
    at = [dict(zip(s, v, strict=True)) for s, v in series]
    stats = [mean_std([a[step] for a in at]) for step in steps]
    means = [m for m, _ in stats]
    ax.plot(steps, means, lw=1.4, ms=3, label=label, gid=gid, **style)
    if len(series) > 1:
        lo = [m - s for m, s in stats]
        hi = [m + s for m, s in stats]
        ax.fill_between(steps, lo, hi, color=style["color"], alpha=0.15, lw=0, gid=f"{gid} ±std")
