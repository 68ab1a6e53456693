"""Token shards in the llm.c / modded-nanogpt ``.bin`` format, so shards made by those tools load as they are.

Layout (little-endian): a header of 256 int32 — ``[0]`` the magic 20240520, ``[1]`` the version 1, ``[2]`` the
number of tokens N, the rest zero — followed by N uint16 token ids. The file is exactly ``1024 + 2 * N``
bytes. Readers memory-map the tokens, so a shard costs no RAM until it is read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lib.errors import UserError
from lib.results import atomic_write_bytes

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAX_TOKEN = np.iinfo(np.uint16).max


def write_shard(path: Path, tokens: np.ndarray) -> Path:
    """Write ``tokens`` (ids in [0, 65535]) as one shard, atomically."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() > MAX_TOKEN):
        raise ValueError(f"token ids must be in [0, {MAX_TOKEN}] to fit uint16, got {tokens.min()}..{tokens.max()}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, tokens.size)
    atomic_write_bytes(Path(path), header.tobytes() + tokens.astype("<u2").tobytes())
    return Path(path)


def _bad(path: Path, problem: str) -> UserError:
    return UserError(
        f"{path}: {problem}; not an llm.c token shard (256 x int32 header, magic {MAGIC}, uint16 tokens): "
        "delete it and re-run, which tokenises or downloads it again, or replace it with a good copy"
    )


def read_shard(path: Path) -> np.ndarray:
    """The shard's tokens as a read-only uint16 memory map; any malformed file is one clear error."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise UserError(f"{path}: no such shard; prepare the dataset first (see docs/gpt2.md)") from None
    if size < HEADER_BYTES:
        raise _bad(path, f"{size} bytes is shorter than the {HEADER_BYTES}-byte header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header[0] != MAGIC:
        raise _bad(path, f"magic number {int(header[0])}, expected {MAGIC}")
    if header[1] != VERSION:
        raise _bad(path, f"version {int(header[1])}, expected {VERSION}")
    n = int(header[2])
    if size != HEADER_BYTES + 2 * n:
        raise _bad(path, f"header says {n} tokens ({HEADER_BYTES + 2 * n} bytes) but the file has {size} bytes")
    if n == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(n,))
