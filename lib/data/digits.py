"""scikit-learn's bundled handwritten digits, upsampled to MNIST's framing: the framework's default dataset.

1797 8x8 images with values 0..16 (the UCI "Optical Recognition of Handwritten Digits" test set), shipped
inside scikit-learn, so it needs no download and suits smoke tests and CPU-only runs. Each image is scaled to
0..255, upsampled bilinearly to 28x28 and zero-padded to 32x32 exactly like MNIST.

The train/test split is fixed (20% of each class to test, drawn with seed 0) and independent of any run seed,
so every run of every matrix evaluates on the same images.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lib.data.registry import DATASETS, IMAGE_SIZE, TRAIN_SIZES, ImageDataset
from lib.errors import UserError

NUM_CLASSES = 10
SOURCE_SIZE = 28  # the upsampled size, MNIST's, before padding
PAD = (IMAGE_SIZE - SOURCE_SIZE) // 2
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def stratified_split(labels: torch.Tensor, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted train and test indices; test holds ``round(test_fraction * n_c)`` of each class c."""
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    # Classes in ascending order consume the one generator in a fixed sequence: the split is reproducible.
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        shuffled = members[torch.randperm(len(members), generator=generator)]
        n_test = round(test_fraction * len(members))
        test.append(shuffled[:n_test])
        train.append(shuffled[n_test:])
    # Sorting keeps the source order inside each split, rather than grouping examples by class.
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def _to_32x32(images: torch.Tensor) -> torch.Tensor:
    """(N, 8, 8) float values 0..16 -> (N, 1, 32, 32) uint8 values 0..255 with a 2-pixel zero border."""
    x = images.to(torch.float64).unsqueeze(1) * (255.0 / 16.0)  # (N, 1, 8, 8)
    # (N, 1, 28, 28)
    x = F.interpolate(x, size=(SOURCE_SIZE, SOURCE_SIZE), mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8)
    return F.pad(x, (PAD, PAD, PAD, PAD)).contiguous()  # (N, 1, 32, 32)


# 1797 images less round(0.2 x n_c) of each class c (359 in all) held out to test
TRAIN_SIZES["digits"] = 1438


def bundled_csv() -> Path:
    """scikit-learn's copy of the digits, ``sklearn/datasets/data/digits.csv.gz``, found without importing
    scikit-learn (which takes over a second, once per training process)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise UserError("the digits dataset ships with scikit-learn, which is not installed: run `make env`")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise UserError(f"scikit-learn's digits file {path} is missing: reinstall scikit-learn (`make env`)")
    return path


def read_csv(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The (N, 8, 8) float images (values 0..16) and (N,) labels of a digits CSV: one image per row, its 64
    pixels row by row, then its label (scikit-learn's ``load_digits`` reads the same file)."""
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    if rows.shape[1] != 65:
        raise UserError(f"{path}: {rows.shape[1]} columns per row, expected 64 pixels and a label")
    return torch.from_numpy(rows[:, :64].reshape(-1, 8, 8)), torch.from_numpy(rows[:, 64]).to(torch.int64)


@DATASETS.register("digits")
def load_digits(data_dir: Path) -> ImageDataset:
    """The digits dataset; ``data_dir`` is unused (the data ships with scikit-learn)."""
    images, y = read_csv(bundled_csv())
    x = _to_32x32(images)
    train_idx, test_idx = stratified_split(y, TEST_FRACTION, SPLIT_SEED)
    return ImageDataset.from_splits(
        "digits",
        x[train_idx].contiguous(),
        y[train_idx].contiguous(),
        x[test_idx].contiguous(),
        y[test_idx].contiguous(),
        NUM_CLASSES,
    )
