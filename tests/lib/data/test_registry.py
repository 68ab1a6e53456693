"""The dataset registry and the ImageDataset contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lib.data import DATASETS, ImageDataset, load_dataset
from lib.data.registry import channel_stats
from lib.errors import UserError


def test_registered_names() -> None:
    assert {"digits", "mnist", "fashion_mnist"} <= set(DATASETS)
    assert all(name == name.lower() for name in DATASETS)


def test_unknown_name_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="'nope'.*digits, fashion_mnist, mnist"):
        load_dataset("nope", tmp_path)


def test_register_rejects_duplicates_and_bad_names() -> None:
    with pytest.raises(ValueError, match="twice"):
        DATASETS.register("digits")(lambda data_dir: None)
    with pytest.raises(ValueError, match="lower-case"):
        DATASETS.register("MNIST")
    with pytest.raises(ValueError, match="IMAGE_DATASET_FASHION-MNIST"):
        DATASETS.register("fashion-mnist")
    assert "MNIST" not in DATASETS and "fashion-mnist" not in DATASETS


def _tensors(n: int = 4, c: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(n, c, 32, 32, dtype=torch.uint8), torch.zeros(n, dtype=torch.int64)


def test_image_dataset_validates_its_tensors() -> None:
    x, y = _tensors()
    ImageDataset.from_splits("ok", x, y, x, y, 10)
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset.from_splits("bad", x.float(), y, x, y, 10)
    with pytest.raises(ValueError, match="32, 32"):
        ImageDataset.from_splits("bad", x[:, :, :28, :28].contiguous(), y, x, y, 10)
    with pytest.raises(ValueError, match="int64"):
        ImageDataset.from_splits("bad", x, y[:3], x, y, 10)
    with pytest.raises(ValueError, match="contiguous"):
        ImageDataset.from_splits("bad", x.transpose(2, 3), y, x, y, 10)


def test_channel_stats_by_hand() -> None:
    # Channel 0 holds 0 and 255 in equal numbers: mean 0.5, std 0.5. Channel 1 is constant 51 = 0.2 * 255.
    x = torch.zeros(2, 2, 32, 32, dtype=torch.uint8)
    x[0, 0] = 255
    x[:, 1] = 51
    mean, std = channel_stats(x)
    assert mean == pytest.approx((0.5, 0.2)) and std == pytest.approx((0.5, 0.0))
