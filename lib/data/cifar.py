"""CIFAR-10 and CIFAR-100: 32x32 colour photographs from the official python-pickle archives.

Krizhevsky, "Learning Multiple Layers of Features from Tiny Images" (2009), https://www.cs.toronto.edu/~kriz/cifar.html.
CIFAR-10 has 10 classes, CIFAR-100 100 ("fine" labels; the 20 coarse superclasses are not used); both have 50000
training and 10000 test images, delivered as uint8 (N, 3, 32, 32) in R, G, B channel order.

Each archive is a tar.gz of pickled dicts with bytes keys: ``b"data"`` a uint8 (n, 3072) array whose rows hold
the red, green and blue 32x32 planes, each row-major, and the labels as a list of ints (``b"labels"`` in CIFAR-10,
``b"fine_labels"`` in CIFAR-100). Pickles can run arbitrary code, so they are read with an unpickler that only
resolves the handful of numpy globals an array needs.

The archive lives in ``<data_dir>/cifar10/`` resp. ``<data_dir>/cifar100/`` and is downloaded there (and
md5-verified against the checksums torchvision publishes) when missing. The first load parses it and caches the
tensors next to it as ``cifar10.pt`` / ``cifar100.pt``; later loads read the cache, and rebuild it when it is
unreadable or the archive beside it has changed.
"""

from __future__ import annotations

import codecs
import io
import logging
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lib.data.download import ensure_files, find_local
from lib.data.registry import DATASETS, IMAGE_SIZE, TRAIN_SIZES, ImageDataset
from lib.errors import UserError
from lib.results import atomic_write_bytes

logger = logging.getLogger(__name__)

CHANNELS = 3
ROW_BYTES = CHANNELS * IMAGE_SIZE * IMAGE_SIZE  # 3072: one image per row of b"data"

CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"

CIFAR10_MIRRORS: tuple[str, ...] = ("https://www.cs.toronto.edu/~kriz/",)
CIFAR10_MD5: dict[str, str] = {CIFAR10_ARCHIVE: "c58f30108f718f92721af3b95e74349a"}
CIFAR100_MIRRORS: tuple[str, ...] = ("https://www.cs.toronto.edu/~kriz/",)
CIFAR100_MD5: dict[str, str] = {CIFAR100_ARCHIVE: "eb9058c3a382ffc7106e4002c42a8d85"}


@dataclass(frozen=True)
class ArchiveLayout:
    """Where one CIFAR variant keeps its splits inside its archive."""

    name: str  # registry name, data subdirectory and cache file stem
    archive: str
    train_members: tuple[str, ...]
    test_members: tuple[str, ...]
    labels_key: bytes
    num_classes: int


CIFAR10 = ArchiveLayout(
    name="cifar10",
    archive=CIFAR10_ARCHIVE,
    train_members=tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
    test_members=("cifar-10-batches-py/test_batch",),
    labels_key=b"labels",
    num_classes=10,
)
CIFAR100 = ArchiveLayout(
    name="cifar100",
    archive=CIFAR100_ARCHIVE,
    train_members=("cifar-100-python/train",),
    test_members=("cifar-100-python/test",),
    labels_key=b"fine_labels",
    num_classes=100,
)

# numpy's array-reconstruction function, taken from a live array so that no deprecated module is imported:
# numpy 2 moved it from numpy.core.multiarray (the name the official archives use) to numpy._core.multiarray.
_RECONSTRUCT = np.ndarray((0,), dtype=np.uint8).__reduce__()[0]

# Every global a CIFAR batch pickle may name. Dicts, lists, bytes, str and ints need no global, except bytes in
# a protocol-2 pickle written by Python 3, which are rebuilt with _codecs.encode.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}

Splits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # train_x, train_y, test_x, test_y


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_ALLOWED_GLOBALS`, so a crafted pickle cannot call anything else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(f"{module}.{name}") from None


def _corrupt(path: Path, problem: str) -> UserError:
    problem = problem.replace("\n", " ")
    return UserError(f"{path}: {problem}; delete the file so that it is downloaded again, or replace it")


def _unpickle(path: Path, member: str, raw: bytes) -> object:
    try:
        # encoding="bytes": the archives were pickled by Python 2, whose str keys and array buffers are bytes.
        return _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _ForbiddenGlobal as e:
        raise _corrupt(
            path, f"{member} refers to {e}, which no CIFAR batch contains (refused: pickles can run code)"
        ) from None
    except Exception as e:
        # Malformed pickles raise almost any exception type (UnpicklingError, EOFError, KeyError, struct.error,
        # TypeError from a numpy constructor, ...); all of them mean the same thing here.
        raise _corrupt(path, f"{member} is not a readable pickle ({type(e).__name__}: {e})") from None


def _read_batch(path: Path, member: str, raw: bytes, layout: ArchiveLayout) -> tuple[np.ndarray, np.ndarray]:
    """The (n, 3072) uint8 images and (n,) int64 labels of one pickled batch, validated."""
    batch = _unpickle(path, member, raw)
    if not isinstance(batch, dict):
        raise _corrupt(path, f"{member} holds a {type(batch).__name__}, expected a dict")
    missing = [key for key in (b"data", layout.labels_key) if key not in batch]
    if missing:
        keys = ", ".join(repr(k) for k in batch)
        raise _corrupt(path, f"{member} has no {', '.join(map(repr, missing))} entry (its keys: {keys})")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW_BYTES:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _corrupt(path, f"{member}: expected uint8 data of shape (n, {ROW_BYTES}), got {got}")
    try:
        labels = np.asarray(batch[layout.labels_key])
    except (ValueError, TypeError, OverflowError) as e:
        raise _corrupt(path, f"{member}: labels are not a list of integers ({e})") from None
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise _corrupt(path, f"{member}: expected a list of integer labels, got {labels.dtype} {labels.shape}")
    if labels.shape[0] != data.shape[0]:
        raise _corrupt(path, f"{member}: {labels.shape[0]} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise _corrupt(path, f"{member}: label {bad} out of range 0..{layout.num_classes - 1}")
    return data, labels.astype(np.int64)


def _read_archive(path: Path, layout: ArchiveLayout) -> Splits:
    """Parse the train and test batches of a CIFAR archive (tar.gz, or a tar someone already decompressed)."""
    wanted = set(layout.train_members + layout.test_members)
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    logger.info("parsing %s", path)
    try:
        # "r|*": one sequential pass through the stream, however it is compressed; nothing is extracted to disk.
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name in wanted and member.isfile():
                    f = tar.extractfile(member)
                    assert f is not None  # a regular file always has contents
                    batches[name] = _read_batch(path, name, f.read(), layout)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        # TarError: bad headers or a cut-off stream; EOFError, BadGzipFile (OSError), zlib.error: bad gzip.
        raise _corrupt(path, f"not a readable {layout.archive} archive ({type(e).__name__}: {e})") from None
    for name in layout.train_members + layout.test_members:
        if name not in batches:
            raise _corrupt(path, f"member {name} is missing (is this the official {layout.archive}?)")

    def split(members: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        data = np.concatenate([batches[m][0] for m in members])  # (N, 3072), a fresh writable copy
        x = data.reshape(-1, CHANNELS, IMAGE_SIZE, IMAGE_SIZE)  # (N, 3, 32, 32): R, G, B planes, rows of 32
        y = np.concatenate([batches[m][1] for m in members])  # (N,)
        return torch.from_numpy(x), torch.from_numpy(y)

    return *split(layout.train_members), *split(layout.test_members)


def _stamp(archive: Path) -> dict[str, int]:
    st = archive.stat()
    return {"archive_size": st.st_size, "archive_mtime_ns": st.st_mtime_ns}


def _load_cache(path: Path, archive: Path | None, layout: ArchiveLayout) -> Splits | None:
    """The cached tensors, or None (logging why) when the cache is absent, unreadable, invalid or stale."""
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        # A cache is only an optimisation: whatever went wrong reading it (truncated zip, bad pickle, I/O
        # error), the archive can rebuild it.
        logger.warning("ignoring unreadable cache %s (%s: %s); rebuilding it", path, type(e).__name__, e)
        return None
    keys = ("train_x", "train_y", "test_x", "test_y")
    if not isinstance(cached, dict) or not all(isinstance(cached.get(k), torch.Tensor) for k in keys):
        logger.warning("ignoring cache %s: not the expected dict of tensors; rebuilding it", path)
        return None
    if archive is not None and any(cached.get(k) != v for k, v in _stamp(archive).items()):
        logger.info("%s has changed since %s was written; rebuilding the cache", archive, path)
        return None
    splits = tuple(cached[k].contiguous() for k in keys)
    for x, y in (splits[:2], splits[2:]):
        shape_ok = x.dtype == torch.uint8 and x.shape[1:] == (CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
        labels_ok = y.dtype == torch.int64 and y.shape == (x.shape[0],)
        if not (shape_ok and labels_ok) or (y.numel() and not 0 <= y.min() <= y.max() < layout.num_classes):
            logger.warning("ignoring cache %s: tensors of the wrong type, shape or label range; rebuilding it", path)
            return None
    return splits


def _save_cache(path: Path, splits: Splits, archive: Path) -> None:
    buf = io.BytesIO()
    torch.save(dict(zip(("train_x", "train_y", "test_x", "test_y"), splits, strict=True)) | _stamp(archive), buf)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as e:
        # A read-only data directory still works, it just parses the archive on every load.
        logger.warning("could not write the cache %s (%s); continuing without it", path, e)
        return
    logger.info("cached the parsed tensors in %s", path)


def _load_cifar(layout: ArchiveLayout, data_dir: Path, mirrors: tuple[str, ...], md5s: dict[str, str]) -> ImageDataset:
    directory = data_dir / layout.name
    cache = directory / f"{layout.name}.pt"
    splits = _load_cache(cache, find_local(directory, layout.archive), layout)
    if splits is None:
        (archive,) = ensure_files(directory, (layout.archive,), mirrors, md5s, layout.name)
        splits = _read_archive(archive, layout)
        _save_cache(cache, splits, archive)
    return ImageDataset.from_splits(layout.name, *splits, layout.num_classes)


TRAIN_SIZES["cifar10"] = TRAIN_SIZES["cifar100"] = 50000


@DATASETS.register("cifar10")
def load_cifar10(data_dir: Path) -> ImageDataset:
    """CIFAR-10 from ``<data_dir>/cifar10/``, downloaded there first if missing: 50000 train, 10000 test."""
    return _load_cifar(CIFAR10, data_dir, CIFAR10_MIRRORS, CIFAR10_MD5)


@DATASETS.register("cifar100")
def load_cifar100(data_dir: Path) -> ImageDataset:
    """CIFAR-100 (fine labels) from ``<data_dir>/cifar100/``, downloaded there first if missing."""
    return _load_cifar(CIFAR100, data_dir, CIFAR100_MIRRORS, CIFAR100_MD5)
