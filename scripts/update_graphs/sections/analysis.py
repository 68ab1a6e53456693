"""Sparsity analysis of the matrix's runs (``make analyze RUN=<run>``, docs/analysis.md): how far the one-shot
methods' masks agree, how coherent the activations are in blocks (MMM), how well the co-active features cluster.
The rows are the analysis tables' (``RESULTS_DIR/analysis/<table>.csv``, the truth behind ``results.duckdb``;
RESULTS_DIR is the matrix directory's parent) whose source is one of this matrix's runs; the figures are
``make analyze``'s own, in each run's ``analysis/`` directory. A matrix none of whose runs was analysed has no
such section."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from lib.analysis import store
from scripts.update_graphs.figures import new_figure
from scripts.update_graphs.numbers import mean
from scripts.update_graphs.tables import md_table

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report

INTRO = (
    "From `make analyze` on the runs below (docs/analysis.md): the one-shot results' mask agreement, mean over"
    " the Linears of every block; MMM block coherence (the fraction of blocks of consecutive features in which"
    " every feature is inactive on a token, mean over the projections; published rule of thumb: above 0.3,"
    " multiply-mask-multiply pays off); k-means separation of the 128 features nearest a reference, of the"
    " masks' input features and of the co-active features."
)
PAYS_OFF = 0.3  # the published rule of thumb for MMM coherence


def _num(text: str) -> float:
    """A CSV cell as a number; an empty cell (a value not measured) is NaN."""
    return float(text) if text else math.nan


def defined_mean(values: list[float]) -> float:
    """The mean of the values that are not NaN (a cosine is undefined for an all-zero weight); NaN if none is."""
    kept = [v for v in values if not math.isnan(v)]
    return mean(kept) if kept else math.nan


def agreement(found: list[dict[str, str]]) -> list[str]:
    """Per (run, pair): mean Jaccard, Hamming fraction and cosine (where defined) over the Linears."""
    groups: dict[tuple[str, str, str, str], list[dict[str, str]]] = defaultdict(list)
    for r in found:
        groups[(r["source"], r["label_a"], r["label_b"], r["method"])].append(r)
    body = [
        [source, a, b, method or "", len(rows),
         f"{mean([_num(r['jaccard']) for r in rows]):.3f}", f"{mean([_num(r['hamming_frac']) for r in rows]):.3f}",
         f"{defined_mean([_num(r['cosine']) for r in rows]):.3f}"]
        for (source, a, b, method), rows in sorted(groups.items())
    ]  # fmt: skip
    return md_table(["run", "mask a", "mask b", "one method", "Linears", "Jaccard", "Hamming", "cosine"], body)


def coherence(found: list[dict[str, str]]) -> dict[tuple[str, int], list[float]]:
    """(ordering, block size) -> the projections' MMM coherence values."""
    values: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in found:
        values[(r["ordering"], int(r["block_size"]))].append(_num(r["coherence"]))
    return dict(sorted(values.items()))


def plot_coherence(values: dict[tuple[str, int], list[float]], title: str) -> Figure:
    """Mean MMM coherence against block size, a line per feature ordering; the 0.3 rule of thumb dashed."""
    fig = new_figure(7, 4.5)
    ax = fig.subplots()
    for ordering in sorted({o for o, _ in values}):
        points = sorted((b, mean(v)) for (o, b), v in values.items() if o == ordering)
        ax.plot(*zip(*points, strict=True), marker="o", label=f"features in {ordering} order")
    ax.axhline(PAYS_OFF, linestyle="--", color="grey", linewidth=1, label=f"{PAYS_OFF} (MMM pays off above)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("block size (features)")
    ax.set_ylabel("MMM block coherence, mean over projections")
    ax.set_title(title)
    ax.legend()
    return fig


def coherence_table(values: dict[tuple[str, int], list[float]]) -> list[str]:
    body = [
        [ordering, block, len(v), f"{mean(v):.3f}", f"{sum(x > PAYS_OFF for x in v)} of {len(v)}"]
        for (ordering, block), v in values.items()
    ]
    return md_table(["ordering", "block size", "projections", "coherence", f"above {PAYS_OFF}"], body)


def separation(found: list[dict[str, str]]) -> list[str]:
    """Per k: the mean separation (between / within Hamming distance) over the projections."""
    by_k: dict[int, dict[tuple[str, str, str], float]] = defaultdict(dict)
    for r in found:  # one row per cluster; the clustering's separation repeats on each
        by_k[int(r["k"])][(r["source"], r["layer"], r["component"])] = _num(r["separation"])
    body = [[k, len(v), f"{mean(list(v.values())):.2f}"] for k, v in sorted(by_k.items())]
    return md_table(["k", "projections", "separation"], body)


def mask_separation(found: list[dict[str, str]]) -> list[str]:
    """Per (run, mask set): the mean separation over the Linears at each k (``mask_clusters``)."""
    groups: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in found:
        groups[(r["source"], r["label"])][int(r["k"])].append(_num(r["separation"]))
    ks = sorted({k for by_k in groups.values() for k in by_k})
    body = [
        [source, label, *(f"{defined_mean(by_k[k]):.2f}" if k in by_k else "" for k in ks)]
        for (source, label), by_k in sorted(groups.items())
    ]
    return md_table(["run", "mask set", *(f"k = {k}" for k in ks)], body)


TABLES = ("mask_comparison", "mask_clusters", "mmm_coherence", "coactivation_clusters")


def add(report: Report) -> None:
    results_dir = report.matrix.path.parent
    runs = {run.path.name: run for run in report.matrix.runs}
    found = {t: store.rows(results_dir, t, runs) for t in TABLES}
    if not any(found.values()):
        return
    report.heading("Sparsity analysis")
    report.add(INTRO, "")
    if found["mask_comparison"]:
        report.add("**Mask agreement** (`mask_comparison`; per feature: `mask_features`):", "")
        report.add(*agreement(found["mask_comparison"]), "")
    if found["mask_clusters"]:
        report.add("**Mask clusters** (`mask_clusters`: separation of the input features' kept outputs, mean over")
        report.add("the Linears; higher: more structured sparsity):", "")
        report.add(*mask_separation(found["mask_clusters"]), "")
    if found["mmm_coherence"]:
        values = coherence(found["mmm_coherence"])
        title = f"{report.matrix.name}: MMM block coherence"
        report.draw(plot_coherence, "analysis-mmm", values, title)
        report.image(title, "analysis-mmm")
        report.add(*coherence_table(values), "")
    if found["coactivation_clusters"]:
        report.add("**Co-activation clusters** (`coactivation_clusters`):", "")
        report.add(*separation(found["coactivation_clusters"]), "")
    for name, run in sorted(runs.items()):
        figures = sorted((run.path / "analysis").glob("agreement-*.png"))
        if figures:
            report.add(
                f"Agreement heatmaps of `{name}` (Jaccard per block and Linear; all figures: `{name}/analysis/`):", ""
            )
            report.add(*[f"![{f.stem}]({name}/analysis/{f.name})" for f in figures], "")
