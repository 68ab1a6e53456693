"""Mask agreement on a 2x4 layer whose values are computed by hand, and the loader of a mask directory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lib.analysis.masks import (
    COLUMNS,
    compare,
    compare_dirs,
    compare_features,
    compare_masks,
    compare_saved_features,
    cosine,
    hamming,
    jaccard,
    load_mask_dir,
    matched_dirs,
)
from lib.errors import UserError

T, F = True, False
A = torch.tensor([[T, T, F, F], [T, F, T, F]])
B = torch.tensor([[T, F, T, F], [T, F, T, F]])
W = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
# W·A = [[1,2,0,0],[5,0,7,0]], W·B = [[1,0,3,0],[5,0,7,0]]: dot 1+25+49 = 75, norms² 79 and 84
COSINE = 75 / math.sqrt(79 * 84)


def test_layer_measures_by_hand() -> None:
    assert jaccard(A, B) == pytest.approx(3 / 5)  # both keep (0,0), (1,0), (1,2); either keeps those and (0,1), (0,2)
    assert hamming(A, B) == 2
    assert cosine(W * A, W * B) == pytest.approx(COSINE)
    row = compare(A, B, W, W)
    assert row == {
        "jaccard": pytest.approx(0.6),
        "hamming": 2,
        "hamming_frac": 0.25,
        "cosine": pytest.approx(COSINE),
        "density_a": 0.5,
        "density_b": 0.5,
    }
    assert math.isnan(compare(A, B)["cosine"])  # no weights: no cosine


def test_empty_masks_agree_and_zero_weights_have_no_cosine() -> None:
    empty = torch.zeros(2, 4, dtype=torch.bool)
    assert jaccard(empty, empty) == 1.0
    assert math.isnan(cosine(torch.zeros(3), torch.ones(3)))
    with pytest.raises(ValueError, match="different shapes"):
        jaccard(A, A.T)


def test_per_row_and_per_column() -> None:
    rows = compare_features(A, B, W, W, axis="row")
    assert [r["jaccard"] for r in rows] == pytest.approx([1 / 3, 1.0])
    assert [r["hamming"] for r in rows] == [2, 0]
    assert [r["hamming_frac"] for r in rows] == [0.5, 0.0]
    assert [r["cosine"] for r in rows] == pytest.approx([1 / math.sqrt(50), 1.0])  # [1,2,0,0]·[1,0,3,0] = 1
    cols = compare_features(A, B, W, W, axis="column")
    assert [c["jaccard"] for c in cols] == pytest.approx([1.0, 0.0, 0.5, 1.0])  # column 3: both empty
    assert [c["hamming"] for c in cols] == [0, 1, 1, 0]
    assert [c["density_a"] for c in cols] == [1.0, 0.5, 0.5, 0.0]
    assert [c["density_b"] for c in cols] == [1.0, 0.0, 1.0, 0.0]
    assert cols[0]["cosine"] == pytest.approx(1.0)
    assert math.isnan(cols[1]["cosine"]) and math.isnan(cols[3]["cosine"])  # a zero column on one side


def test_compare_masks_names_layers_and_components() -> None:
    rows = compare_masks({"layer3-fc1": A, "lm_head": A}, {"layer3-fc1": B, "lm_head": A})
    assert [(r["layer"], r["component"], r["indices"]) for r in rows] == [(3, "fc1", ""), (None, "lm_head", "")]
    assert rows[0]["jaccard"] == pytest.approx(0.6) and rows[1]["jaccard"] == 1.0
    assert list(rows[0]) == list(COLUMNS)
    with pytest.raises(ValueError, match="only in the first"):
        compare_masks({"a": A}, {"b": A})


def _save(directory: Path, masks: dict[str, tuple[torch.Tensor, torch.Tensor]], sparsity: str) -> Path:
    directory.mkdir()
    for key, (mask, weight) in masks.items():
        torch.save({"mask": mask, "weight": weight * mask}, directory / f"{key}-{sparsity}.pt")
    (directory / "prune.json").write_text(json.dumps({"method": "test"}))
    return directory


def test_directories_compare_file_for_file(tmp_path: Path) -> None:
    """Files in the published naming (``layer0-mlp.down_proj-0-0-0.5.pt``) load and match by layer, component
    and indices."""
    a = _save(tmp_path / "nm", {"layer0-fc1-0-0": (A, W), "layer1-self_attn.q_proj-0-1": (A, W)}, "0.25")
    b = _save(tmp_path / "unstructured", {"layer0-fc1-0-0": (B, W), "layer1-self_attn.q_proj-0-1": (A, W)}, "0.5")
    loaded = load_mask_dir(a)
    assert list(loaded) == ["layer0-fc1-0-0", "layer1-self_attn.q_proj-0-1"]
    q = loaded["layer1-self_attn.q_proj-0-1"]
    assert (q.layer, q.component, q.indices, q.sparsity) == (1, "self_attn.q_proj", "0-1", "0.25")
    rows = compare_dirs(a, b)  # matched by layer, component and indices, whatever the sparsity field says
    expected = [(0, "fc1", "0-0"), (1, "self_attn.q_proj", "0-1")]
    assert [(r["layer"], r["component"], r["indices"]) for r in rows] == expected
    assert rows[0]["jaccard"] == pytest.approx(0.6) and rows[0]["cosine"] == pytest.approx(COSINE)
    assert rows[1]["jaccard"] == 1.0 and rows[1]["hamming"] == 0
    features = compare_saved_features(*matched_dirs(a, b))  # per output row of each file: A vs B, then A vs A
    assert [(r["layer"], r["component"], r["indices"], r["feature"]) for r in features] == [
        (0, "fc1", "0-0", 0), (0, "fc1", "0-0", 1), (1, "self_attn.q_proj", "0-1", 0), (1, "self_attn.q_proj", "0-1", 1)
    ]  # fmt: skip
    assert [r["jaccard"] for r in features] == pytest.approx([1 / 3, 1.0, 1.0, 1.0])
    assert [r["hamming"] for r in features] == [2, 0, 0, 0]


def test_directory_errors_are_one_line(tmp_path: Path) -> None:
    a = _save(tmp_path / "a", {"layer0-fc1-0-0": (A, W)}, "0.5")
    b = _save(tmp_path / "b", {"layer0-fc2-0-0": (A, W)}, "0.5")
    with pytest.raises(UserError, match="prune different layers"):
        compare_dirs(a, b)
    with pytest.raises(UserError, match="no layer"):
        load_mask_dir(_save(tmp_path / "empty", {}, "0.5"))
    old = _save(tmp_path / "old", {"layer0-fc1-512x128": (A, W)}, "0.5")  # an earlier make prune's naming
    with pytest.raises(UserError, match=r"layer0-fc1-512x128-0.5.pt in .* is not named .*re-run `make prune`"):
        load_mask_dir(old)
    torch.save({"mask": W}, a / "layer2-fc1-0-0-0.5.pt")
    with pytest.raises(UserError, match="bool 'mask'"):
        load_mask_dir(a)
