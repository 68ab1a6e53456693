"""llm.c token shards: byte-exact layout, round trip, and one clear error per kind of damage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lib.data.shards import HEADER_BYTES, MAGIC, read_shard, write_shard
from lib.errors import UserError


def test_round_trip_and_exact_layout(tmp_path: Path):
    tokens = np.array([0, 1, 50256, 65535, 7], dtype=np.int64)
    path = write_shard(tmp_path / "sub" / "a.bin", tokens)
    raw = path.read_bytes()
    assert len(raw) == HEADER_BYTES + 2 * 5
    header = np.frombuffer(raw[:HEADER_BYTES], dtype="<i4")
    assert header[:3].tolist() == [20240520, 1, 5] and not header[3:].any()
    assert raw[HEADER_BYTES:] == b"\x00\x00\x01\x00\x50\xc4\xff\xff\x07\x00"  # little-endian uint16: 50256 = 0xC450
    assert read_shard(path).tolist() == tokens.tolist()


def test_a_shard_written_by_hand_like_llm_c_loads(tmp_path: Path):
    # what llm.c's data scripts write: np.zeros(256, int32) header, then tokens as uint16
    header = np.zeros(256, dtype=np.int32)
    header[0], header[1], header[2] = 20240520, 1, 3
    path = tmp_path / "fineweb_train_000001.bin"
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.array([464, 2068, 7586], dtype=np.uint16).tobytes())
    assert read_shard(path).tolist() == [464, 2068, 7586]


def test_empty_shard(tmp_path: Path):
    assert read_shard(write_shard(tmp_path / "e.bin", np.zeros(0, dtype=np.uint16))).size == 0


def test_ids_that_do_not_fit_uint16_are_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="uint16"):
        write_shard(tmp_path / "x.bin", np.array([65536]))


def _damaged(tmp_path: Path, edit) -> Path:
    path = write_shard(tmp_path / "d.bin", np.arange(10))
    raw = bytearray(path.read_bytes())
    path.write_bytes(bytes(edit(raw)))
    return path


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda raw: raw[:100], "shorter than the 1024-byte header"),
        (lambda raw: raw[:-3], "header says 10 tokens (1044 bytes) but the file has 1041 bytes"),
        (lambda raw: b"\x00\x00\x00\x00" + raw[4:], f"magic number 0, expected {MAGIC}"),
        (lambda raw: raw[:4] + b"\x02\x00\x00\x00" + raw[8:], "version 2, expected 1"),
    ],
)
def test_damaged_shards_are_one_clear_error(tmp_path: Path, edit, message):
    path = _damaged(tmp_path, edit)
    with pytest.raises(UserError) as e:
        read_shard(path)
    text = str(e.value)
    assert message in text and str(path) in text and "\n" not in text


def test_missing_shard(tmp_path: Path):
    with pytest.raises(UserError, match="no such shard"):
        read_shard(tmp_path / "nope.bin")
