"""The image-dataset registry and the one type every dataset loader returns.

``IMAGE_DATASET_<NAME>`` in Kconfig (``lib/data/Kconfig``) -> ``DATASETS["<name>"]``, a loader
``(data_dir) -> ImageDataset`` registered with ``@DATASETS.register("<name>")``; :func:`load_dataset` is the only
way the rest of the framework gets images. Adding a dataset is one new module in ``lib/data/`` (its loader, and
its training-set size in :data:`TRAIN_SIZES`) plus its import in ``lib/data/__init__.py``, and one
``IMAGE_DATASET_<NAME>`` entry in ``lib/data/Kconfig``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lib.registry import Registry

IMAGE_SIZE = 32  # every dataset is delivered at LeNet-5's 32x32 input size

# Images per chunk when computing statistics: bounds the int64 working copy to ~32 MiB per channel-plane set.
_STATS_CHUNK = 4096


@dataclass(frozen=True)
class ImageDataset:
    """A classification dataset held in memory as uint8 tensors of shape (N, C, 32, 32)."""

    name: str
    train_x: torch.Tensor  # uint8, (N, C, 32, 32), contiguous, CPU
    train_y: torch.Tensor  # int64, (N,)
    test_x: torch.Tensor  # uint8, (M, C, 32, 32)
    test_y: torch.Tensor  # int64, (M,)
    num_classes: int
    mean: tuple[float, ...]  # per-channel mean of train_x / 255
    std: tuple[float, ...]  # per-channel (population) std of train_x / 255

    def __post_init__(self) -> None:
        # These are bugs in a loader, not user errors, so they raise ValueError.
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[2:] != (IMAGE_SIZE, IMAGE_SIZE):
                raise ValueError(f"{self.name} {split}_x: want uint8 (N, C, 32, 32), got {x.dtype} {tuple(x.shape)}")
            if not x.is_contiguous() or x.device.type != "cpu":
                raise ValueError(f"{self.name} {split}_x must be a contiguous CPU tensor")
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise ValueError(f"{self.name} {split}_y: want int64 ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
        if self.train_x.shape[1] != self.test_x.shape[1]:
            raise ValueError(f"{self.name}: train and test have different channel counts")
        if not len(self.mean) == len(self.std) == self.train_x.shape[1]:
            raise ValueError(f"{self.name}: need one mean and one std per channel")

    @property
    def channels(self) -> int:
        return self.train_x.shape[1]

    @classmethod
    def from_splits(
        cls,
        name: str,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        test_x: torch.Tensor,
        test_y: torch.Tensor,
        num_classes: int,
    ) -> ImageDataset:
        """Build a dataset, computing the normalisation constants from the training images."""
        mean, std = channel_stats(train_x)
        return cls(name, train_x, train_y, test_x, test_y, num_classes, mean, std)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of a uint8 (N, C, H, W) tensor, scaled to [0, 1].

    Sums are exact integers, so the result does not depend on summation order, thread count or machine.
    """
    channels = x.shape[1]
    total = [0] * channels
    total_sq = [0] * channels
    for chunk in x.split(_STATS_CHUNK):
        wide = chunk.to(torch.int64)  # (n, C, H, W); uint8 squares would overflow
        total = [t + int(s) for t, s in zip(total, wide.sum(dim=(0, 2, 3)).tolist(), strict=True)]
        total_sq = [t + int(s) for t, s in zip(total_sq, (wide * wide).sum(dim=(0, 2, 3)).tolist(), strict=True)]
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = tuple(t / count / 255 for t in total)
    # n * sum(x^2) - sum(x)^2 is an exact integer >= 0, so no catastrophic cancellation.
    std = tuple((count * sq - t * t) ** 0.5 / count / 255 for t, sq in zip(total, total_sq, strict=True))
    return mean, std


DATASETS: Registry[Callable[[Path], ImageDataset]] = Registry("dataset", "IMAGE_DATASET")

# Training images per dataset, declared by each module beside its loader's registration: a run's optimizer steps
# are counted from it (`make plan`) without loading the data.
TRAIN_SIZES: dict[str, int] = {}


def load_dataset(name: str, data_dir: str | os.PathLike) -> ImageDataset:
    """Load the dataset registered as ``name``, finding or downloading its files under ``data_dir``."""
    return DATASETS[name](Path(data_dir))
