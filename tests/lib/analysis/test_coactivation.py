"""Binary activations at the sparse GEMV's thresholds, Hamming orderings, k-means, MMM coherence on hand-made
matrices; the analysis tables, figures and notebook."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.analysis import figures, store
from lib.analysis.coactivation import (
    binarize,
    calibrate_thresholds,
    cluster_features,
    cluster_rows,
    hamming_histogram,
    hamming_matrix,
    hamming_order,
    hamming_to,
    mmm_coherence,
    mmm_row,
    nearest_features,
    pair_distances,
    tsne,
)
from lib.analysis.masks import compare_masks
from tests.helpers import ROOT

# features × tokens; feature 0 is the reference
HAND = torch.tensor(
    [
        [1, 1, 0, 0],  # d = 0
        [0, 0, 1, 1],  # d = 1
        [1, 1, 1, 0],  # d = 1/4
        [1, 0, 0, 0],  # d = 1/4
        [1, 1, 0, 0],  # d = 0
    ],
    dtype=torch.bool,
)


def _grouped(seed: int = 0, per_group: int = 20, tokens: int = 64) -> torch.Tensor:
    """Three groups of features, each a noisy copy (5 % of bits flipped) of its own random pattern."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.rand(3, tokens, generator=g) < 0.3
    rows = patterns.repeat_interleave(per_group, 0)
    return rows ^ (torch.rand(rows.shape, generator=g) < 0.05)


def test_thresholds_hit_the_target_sparsity() -> None:
    g = torch.Generator().manual_seed(0)
    acts = {"fc1": torch.randn(1000, 16, generator=g), "fc2": 3 * torch.randn(500, 32, generator=g)}
    thresholds = calibrate_thresholds(acts, 0.9)
    for name, x in acts.items():
        binary = binarize(x, thresholds[name])
        assert binary.shape == (x.shape[1], x.shape[0])  # features × tokens
        assert 1 - binary.float().mean().item() == pytest.approx(0.9, abs=1e-6)  # distinct values: exactly s


def test_hamming_ordering_by_hand() -> None:
    assert hamming_to(HAND, 0).tolist() == [0.0, 1.0, 0.25, 0.25, 0.0]
    assert hamming_order(HAND, 0).tolist() == [0, 4, 2, 3, 1]  # ties by index
    assert hamming_order(HAND, 1).tolist() == [1, 2, 3, 0, 4]  # 1, 0, 3/4, 3/4, 1: ties by index
    assert nearest_features(HAND, 4, count=3).tolist() == [4, 0, 2]  # the reference first, even when tied
    assert torch.equal(hamming_matrix(HAND)[0], hamming_to(HAND, 0))
    assert sorted(pair_distances(HAND[[0, 2, 3]]).tolist()) == [0.25, 0.25, 0.5]
    rows = hamming_histogram(np.array([0.0, 0.25, 0.25, 1.0]), bins=4)
    assert [r["pairs"] for r in rows] == [1, 2, 0, 1]


def test_mmm_coherence_by_hand() -> None:
    binary = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0]], dtype=torch.bool)
    assert mmm_coherence(binary, 1) == 10 / 12  # the fraction of zeros
    assert mmm_coherence(binary, 2) == 4 / 6  # {0,1}: tokens 1, 2 silent; {2,3}: tokens 0, 1
    assert mmm_coherence(binary, 4) == 1 / 3  # only token 1 is silent in every feature
    assert mmm_coherence(binary, 3) == 4 / 6  # {0,1,2}: token 1; {3} (the remainder): all three tokens
    assert mmm_coherence(binary, 2, order=torch.tensor([0, 2, 1, 3])) == 4 / 6  # {0,2}: token 1; {1,3}: all
    row = mmm_row(binary, 4)
    assert row == {
        "block_size": 4,
        "ordering": "index",
        "features": 4,
        "tokens": 3,
        "coherence": 1 / 3,
        "pays_off": True,
    }


def test_kmeans_is_deterministic_under_a_seed() -> None:
    binary = _grouped()
    first = cluster_features(binary, reference=0, k=3, count=60, seed=1)
    again = cluster_features(binary, reference=0, k=3, count=60, seed=1)
    assert np.array_equal(first.labels, again.labels)
    assert sorted(first.sizes) == [20, 20, 20]  # the three groups
    assert first.between > first.within and first.separation == pytest.approx(first.between / first.within)
    other = cluster_features(binary, reference=0, k=8, count=60, seed=2)
    assert sum(other.sizes) == 60 and len(cluster_rows(other)) == 8
    with pytest.raises(ValueError, match="at most"):
        cluster_features(binary, reference=0, k=8, count=4)


def test_tsne_is_seeded() -> None:
    binary = _grouped(per_group=6)
    first = tsne(binary, seed=0, max_iter=250)
    assert first.shape == (18, 2) and np.array_equal(first, tsne(binary, seed=0, max_iter=250))


def test_tables_round_trip_and_replace_by_source(tmp_path: Path) -> None:
    A = torch.tensor([[True, False], [True, True]])
    rows = compare_masks({"layer0-fc1": A}, {"layer0-fc1": ~A})
    store.write(
        tmp_path, "mask_comparison", "opt-125m", [{"label_a": "wanda", "label_b": "sparsegpt", **r} for r in rows]
    )
    store.write(tmp_path, "mask_comparison", "other", [{"label_a": "x", "label_b": "y", **r} for r in rows])
    store.write(
        tmp_path, "mask_comparison", "opt-125m", [{"label_a": "wanda", "label_b": "sparsegpt", **r} for r in rows]
    )
    columns, got = store.read(tmp_path, "mask_comparison")
    assert columns == store.columns("mask_comparison")
    assert sorted(r[0] for r in got) == ["opt-125m", "other"]  # rewriting a source replaced its rows
    row = dict(zip(columns, got[0], strict=True))
    assert row["layer"] == 0 and row["jaccard"] == 0.0 and row["hamming"] == 4 and math.isnan(row["cosine"])
    binary = torch.tensor([[1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    where = {"layer": 1, "component": "fc1", "sparsity": 0.9, "threshold": 0.5}
    store.write(tmp_path, "mmm_coherence", "opt-125m", [{**where, **mmm_row(binary, 2)}])
    _, got = store.read(tmp_path, "mmm_coherence")
    assert got == [("opt-125m", 1, "fc1", 0.9, 0.5, 2, "index", 2, 3, 2 / 3, True)]
    with pytest.raises(ValueError, match="has no columns"):
        store.write(tmp_path, "mmm_coherence", "s", [{"nope": 1}])


def test_the_results_database_rebuild_keeps_the_analysis_tables(tmp_path: Path) -> None:
    """make update-graphs rebuilds results.duckdb from the matrices; the analyses' tables come back from their
    CSV files."""
    from lib import database

    binary = torch.tensor([[1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    where = {"layer": 1, "component": "fc1", "sparsity": 0.9, "threshold": 0.5}
    store.write(tmp_path, "mmm_coherence", "opt-125m", [{**where, **mmm_row(binary, 2)}])
    database.build(tmp_path)
    _, got = store.read(tmp_path, "mmm_coherence")
    assert got == [("opt-125m", 1, "fc1", 0.9, 0.5, 2, "index", 2, 3, 2 / 3, True)]


def test_figures_are_pngs(tmp_path: Path) -> None:
    binary = _grouped(per_group=6)
    clustering = cluster_features(binary, reference=0, k=3, count=18, seed=0)
    rows = compare_masks({"layer0-fc1": binary, "layer1-fc1": binary}, {"layer0-fc1": binary, "layer1-fc1": ~binary})
    paths = [
        figures.spy(binary, hamming_order(binary, 0), tmp_path / "spy.png"),
        figures.cluster_heatmap(binary[clustering.features], clustering.labels, tmp_path / "clusters.png"),
        figures.tsne_scatter(np.random.default_rng(0).normal(size=(18, 2)), clustering.labels, tmp_path / "tsne.png"),
        figures.agreement_heatmap(rows, tmp_path / "agreement.png"),
        figures.hamming_histograms({"fc1": pair_distances(binary)}, tmp_path / "hamming.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_notebook_compiles() -> None:
    path = ROOT / "notebooks" / "analysis.py"
    compile(path.read_text(), str(path), "exec")


def test_docs_name_every_table_and_column() -> None:
    text = (ROOT / "docs" / "analysis.md").read_text()
    for table, columns in store.TABLES.items():
        assert f"### Table `{table}`" in text
        assert all(f"| `{name}` | {sql_type} |" in text for name, sql_type, _ in columns), table
