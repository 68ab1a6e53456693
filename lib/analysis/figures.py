"""The analysis figures, each from data to one PNG: spy plots ordered by Hamming distance, cluster heatmaps,
t-SNE scatter, the mask-agreement heatmap (layers × components, Jaccard), Hamming-distance histograms.

Drawn as the report draws (:mod:`scripts.update_graphs.figures`, which ``lib/`` may not import): a Figure on the
Agg canvas outside pyplot (nothing global accumulates, no display needed), constrained layout, 110 dpi, no date
in the metadata, written atomically. Each function returns the path it wrote.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lib.results import atomic_write_bytes

DPI = 110


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _write(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata=None)
    atomic_write_bytes(path, buf.getvalue())
    return path


def spy(binary: torch.Tensor, order: torch.Tensor | None, path: str | Path, title: str = "") -> Path:
    """The binary matrix (features × tokens) as black dots where a feature is active, features in ``order``
    (e.g. :func:`~lib.analysis.coactivation.hamming_order`: the reference on top)."""
    rows = binary if order is None else binary[order]
    fig = _figure(10, 5)
    ax = fig.subplots()
    ax.imshow(rows.numpy(), aspect="auto", cmap="Greys", interpolation="nearest")
    ax.set_xlabel("token")
    ax.set_ylabel("feature (by Hamming distance to the reference)" if order is not None else "feature")
    ax.set_title(title or f"active entries: {100 * float(rows.float().mean()):.1f}%")
    return _write(fig, path)


def cluster_heatmap(binary: torch.Tensor, labels: np.ndarray, path: str | Path, title: str = "") -> Path:
    """The clustered features' rows (``binary``: the clustered features × tokens), grouped by cluster, with a
    line between clusters."""
    order = np.argsort(labels, kind="stable")
    fig = _figure(10, 5)
    ax = fig.subplots()
    ax.imshow(binary.numpy()[order], aspect="auto", cmap="Greys", interpolation="nearest")
    bounds = np.flatnonzero(np.diff(labels[order])) + 0.5
    for y in bounds:
        ax.axhline(y, color="C3", lw=0.8)
    ax.set_xlabel("token")
    ax.set_ylabel("feature (by cluster)")
    ax.set_title(title or f"k = {len(set(labels.tolist()))} clusters")
    return _write(fig, path)


def tsne_scatter(points: np.ndarray, labels: np.ndarray | None, path: str | Path, title: str = "t-SNE") -> Path:
    """The t-SNE points (features × 2), coloured by cluster when ``labels`` are given."""
    fig = _figure(6, 5)
    ax = fig.subplots()
    colours = None if labels is None else [f"C{int(c) % 10}" for c in labels]
    ax.scatter(points[:, 0], points[:, 1], s=12, c=colours)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    return _write(fig, path)


def agreement_heatmap(
    rows: Sequence[Mapping],
    path: str | Path,
    value: str = "jaccard",
    title: str = "Wanda vs SparseGPT masks",
    limits: tuple[float, float] | None = (0.0, 1.0),
) -> Path:
    """Layers (rows) × components (columns) of rows with ``layer``, ``component`` and ``value`` (those of
    :func:`~lib.analysis.masks.compare_masks`: Jaccard by default), each cell the value (the mean when several
    rows share a cell), written in the cell; the colour scale spans ``limits`` (None: the values' own range)."""
    layers = sorted({r["layer"] for r in rows}, key=lambda v: (v is None, v))
    components = sorted({r["component"] for r in rows})
    grid = np.full((len(layers), len(components)), np.nan)
    for i, layer in enumerate(layers):
        for j, component in enumerate(components):
            values = [r[value] for r in rows if r["layer"] == layer and r["component"] == component]
            if values:
                grid[i, j] = float(np.mean(values))
    fig = _figure(1.2 * len(components) + 3, 0.4 * len(layers) + 2)
    ax = fig.subplots()
    vmin, vmax = limits if limits is not None else (None, None)
    image = ax.imshow(grid, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    for i in range(len(layers)):
        for j in range(len(components)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize="x-small", color="w")
    ax.set_xticks(range(len(components)), components, rotation=45, ha="right")
    ax.set_yticks(range(len(layers)), [str(v) for v in layers])
    ax.set_xlabel("component")
    ax.set_ylabel("layer")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=value)
    return _write(fig, path)


def hamming_histograms(
    distances: Mapping[str, np.ndarray], path: str | Path, bins: int = 50, title: str = "Hamming distances"
) -> Path:
    """One histogram per label (e.g. projection) of Hamming distances (fractions of tokens), overlaid."""
    fig = _figure(8, 4.5)
    ax = fig.subplots()
    for i, (label, values) in enumerate(distances.items()):
        ax.hist(np.asarray(values), bins=bins, range=(0, 1), histtype="step", lw=1.2, color=f"C{i % 10}", label=label)
    ax.set_xlabel("Hamming distance (fraction of tokens)")
    ax.set_ylabel("feature pairs")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if distances:
        fig.legend(loc="outside right upper", fontsize="small")
    return _write(fig, path)
