"""MNIST and Fashion-MNIST: 28x28 grayscale IDX files, zero-padded to 32x32.

MNIST: LeCun, Bottou, Bengio, Haffner, "Gradient-based learning applied to document recognition" (1998),
http://yann.lecun.com/exdb/mnist/. Fashion-MNIST: Xiao, Rasul, Vollgraf (2017), arXiv:1708.07747, a drop-in
replacement with the same file names and format.

The 2-pixel zero border reproduces LeNet-5's framing: the paper centres the 28x28 digits in a 32x32 field so
that stroke end-points can reach the centre of the receptive fields of the highest-level feature detectors.

Files live in ``<data_dir>/mnist/`` and ``<data_dir>/fashion_mnist/``. Missing files are downloaded from the
mirrors below and md5-verified (the checksums torchvision publishes for the same files). Fashion-MNIST is also
found in the directory of Debian's ``dataset-fashion-mnist`` package; Debian recompressed those files, so
their md5s differ from upstream and only the parser validates them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from lib.data.download import ensure_files, find_local
from lib.data.idx import read_idx
from lib.data.registry import DATASETS, IMAGE_SIZE, TRAIN_SIZES, ImageDataset
from lib.errors import UserError

logger = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

NUM_CLASSES = 10
SOURCE_SIZE = 28
PAD = (IMAGE_SIZE - SOURCE_SIZE) // 2

# Tried in order; LeCun's own site is last because it often refuses or rate-limits downloads.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_MD5: dict[str, str] = {
    TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
    TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
    TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
}

FASHION_MNIST_MIRRORS: tuple[str, ...] = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
FASHION_MNIST_MD5: dict[str, str] = {
    TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
    TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
    TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
}
# Searched, in order, after <data_dir>/fashion_mnist/ and before downloading.
FASHION_MNIST_SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)


def _read_images(path: Path) -> torch.Tensor:
    """(N, 1, 32, 32) uint8: the 28x28 images of an IDX file centred in a zero field."""
    images = read_idx(path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (SOURCE_SIZE, SOURCE_SIZE):
        raise UserError(
            f"{path}: expected uint8 images of shape (N, {SOURCE_SIZE}, {SOURCE_SIZE}), "
            f"got {images.dtype} {images.shape}; replace it with the original file"
        )
    out = torch.zeros(images.shape[0], 1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    out[:, 0, PAD : PAD + SOURCE_SIZE, PAD : PAD + SOURCE_SIZE] = torch.from_numpy(images)
    return out


def _read_labels(path: Path, count: int, images_path: Path) -> torch.Tensor:
    labels = read_idx(path)
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise UserError(
            f"{path}: expected a uint8 label vector, got {labels.dtype} {labels.shape}; "
            "replace it with the original file"
        )
    if labels.shape[0] != count:
        raise UserError(
            f"{path}: {labels.shape[0]} labels but {images_path.name} has {count} images; "
            "the files come from different downloads, replace both"
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise UserError(
            f"{path}: label {int(labels.max())} out of range 0..{NUM_CLASSES - 1}; replace it with the original file"
        )
    return torch.from_numpy(labels).to(torch.int64)


def _read_split(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    x = _read_images(images_path)
    return x, _read_labels(labels_path, x.shape[0], images_path)


def _load_idx_dataset(name: str, paths: list[Path]) -> ImageDataset:
    train_images, train_labels, test_images, test_labels = paths
    train_x, train_y = _read_split(train_images, train_labels)
    test_x, test_y = _read_split(test_images, test_labels)
    return ImageDataset.from_splits(name, train_x, train_y, test_x, test_y, NUM_CLASSES)


def _complete(directory: Path) -> list[Path] | None:
    """The four files in ``directory``, or None if any is missing."""
    paths = [find_local(directory, f) for f in FILES]
    return None if any(p is None for p in paths) else paths


TRAIN_SIZES["mnist"] = TRAIN_SIZES["fashion_mnist"] = 60000


@DATASETS.register("mnist")
def load_mnist(data_dir: Path) -> ImageDataset:
    """MNIST from ``<data_dir>/mnist/``, downloaded there first if missing: 60000 train, 10000 test."""
    paths = ensure_files(data_dir / "mnist", FILES, MNIST_MIRRORS, MNIST_MD5, "mnist")
    return _load_idx_dataset("mnist", paths)


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(data_dir: Path) -> ImageDataset:
    """Fashion-MNIST from ``<data_dir>/fashion_mnist/``, else a system directory, else downloaded."""
    directory = data_dir / "fashion_mnist"
    paths = _complete(directory)
    if paths is None:
        for system_dir in FASHION_MNIST_SYSTEM_DIRS:
            paths = _complete(system_dir)
            if paths is not None:
                logger.info("using Fashion-MNIST from %s", system_dir)
                break
    if paths is None:
        hint = " (or install Debian's dataset-fashion-mnist package)"
        paths = ensure_files(directory, FILES, FASHION_MNIST_MIRRORS, FASHION_MNIST_MD5, "fashion_mnist", hint)
    return _load_idx_dataset("fashion_mnist", paths)
