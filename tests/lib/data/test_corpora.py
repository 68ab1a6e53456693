"""GPT-2 corpora on small files in their real formats: document splitting, shards, parallel tokenisation,
streamed downloads and their failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lib.data import corpora
from lib.data.download import fetch
from lib.data.shards import read_shard, write_shard
from lib.data.text import ByteTokenizer, document_tokens
from lib.errors import UserError
from lib.tasks import ConcatTokens


def _tokens(paths: list[Path]) -> list[int]:
    return [int(t) for p in paths for t in read_shard(p)]


def test_shards_hold_every_document_after_an_eot_and_split_at_the_shard_size(tmp_path: Path):
    docs = ["alpha", "béta", "", "gamma delta"]
    paths = corpora.tokenize_to_shards(docs, "byte", tmp_path, "train", shard_tokens=7)
    expected = [t for doc in docs for t in document_tokens(ByteTokenizer(), doc)]
    assert _tokens(paths) == expected
    assert [p.name for p in paths] == [f"train_{i:06d}.bin" for i in range(len(paths))]
    assert [len(read_shard(p)) for p in paths] == [7] * (len(expected) // 7) + ([len(expected) % 7] or [])


@pytest.mark.slow
def test_parallel_tokenisation_gives_the_same_tokens_in_order(tmp_path: Path):
    docs = [f"document {i}: " + "x" * (i % 17) for i in range(300)]
    one = corpora.tokenize_to_shards(docs, "byte", tmp_path / "one", "train", shard_tokens=1000)
    two = corpora.tokenize_to_shards(iter(docs), "byte", tmp_path / "two", "train", shard_tokens=1000, processes=2)
    assert _tokens(one) == _tokens(two) and len(one) == len(two) > 1


def test_tinystories_documents_are_split_at_endoftext_lines(tmp_path: Path):
    d = tmp_path / "tinystories"
    d.mkdir()
    story = "Once upon a time\nthere was a cat.\n<|endoftext|>\nThe end came.\n<|endoftext|>\n"
    (d / "TinyStoriesV2-GPT4-train.txt").write_text(story * 3)
    (d / "TinyStoriesV2-GPT4-valid.txt").write_text("Val story.\n<|endoftext|>\nLast one without a marker\n")
    train, val = corpora.CORPORA["tinystories"](None).splits(tmp_path)
    assert list(train) == ["Once upon a time\nthere was a cat.", "The end came."] * 3
    assert list(val) == ["Val story.", "Last one without a marker"]


def test_shakespeare_is_split_ninety_ten_and_shards_are_reused(tmp_path: Path):
    (tmp_path / "shakespeare").mkdir()
    (tmp_path / "shakespeare/input.txt").write_text("First Citizen:\nBefore we proceed.\n" * 10)
    corpus = corpora.CORPORA["shakespeare"](None)
    train, val = corpus.shards(tmp_path, "byte")
    text = (tmp_path / "shakespeare/input.txt").read_bytes()
    cut = int(len(text) * 0.9)
    assert _tokens(train) == [256, *text[:cut]] and _tokens(val) == [256, *text[cut:]]
    (tmp_path / "shakespeare/input.txt").unlink()  # tokenised once: no source needed any more
    assert corpus.shards(tmp_path, "byte") == (train, val)


def test_fineweb_edu_reads_parquet_and_keeps_every_hundredth_document_for_validation(tmp_path: Path):
    duckdb = pytest.importorskip("duckdb")
    d = tmp_path / "fineweb_edu"
    d.mkdir()
    texts = [f"doc {i}" for i in range(250)]
    duckdb.sql("CREATE TABLE t AS SELECT unnest($texts) AS text, 0.9 AS score", params={"texts": texts})
    duckdb.sql(f"COPY t TO '{d / '000_00000.parquet'}' (FORMAT parquet)")
    train, val = corpora.CORPORA["fineweb_edu"]({"GPT2_DATA_FILES": 1}).splits(tmp_path)
    assert list(val) == ["doc 0", "doc 100", "doc 200"]
    assert list(train) == [t for i, t in enumerate(texts) if i % 100]


def test_fineweb10b_uses_the_pretokenised_shards_and_needs_the_gpt2_tokenizer(tmp_path: Path):
    d = tmp_path / "fineweb10b"
    write_shard(d / "fineweb_val_000000.bin", np.array([50256, 1, 2]))
    for i in (1, 2):
        write_shard(d / f"fineweb_train_{i:06d}.bin", np.array([50256, 10 * i, 10 * i + 1]))
    train, val = corpora.CORPORA["fineweb10b"]({"GPT2_DATA_FILES": 2}).shards(tmp_path, "gpt2")
    assert _tokens(train) == [50256, 10, 11, 50256, 20, 21] and _tokens(val) == [50256, 1, 2]
    with pytest.raises(UserError, match="GPT2_TOKENIZER=gpt2"):
        corpora.CORPORA["fineweb10b"]({"GPT2_DATA_FILES": 1}).shards(tmp_path, "byte")


def test_fetch_streams_a_file_into_place(tmp_path: Path):
    source = tmp_path / "src.bin"
    source.write_bytes(bytes(range(256)) * 5000)
    path = fetch(source.as_uri(), tmp_path / "data/out.bin", "hint")
    assert path.read_bytes() == source.read_bytes() and not list(path.parent.glob(".*part"))


def test_a_failed_download_is_one_line_saying_where_to_put_the_file(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(corpora.Shakespeare, "URL", "http://127.0.0.1:9/input.txt")  # refused, online or not
    with pytest.raises(UserError) as e:
        corpora.CORPORA["shakespeare"](None).splits(tmp_path)
    message = str(e.value)
    assert "\n" not in message and "input.txt" in message and str((tmp_path / "shakespeare").resolve()) in message
    assert not (tmp_path / "shakespeare/input.txt").exists() and not list((tmp_path / "shakespeare").glob(".*"))


def test_concatenated_shards_slice_across_boundaries():
    tokens = ConcatTokens([np.arange(0, 5), np.arange(5, 8), np.arange(0), np.arange(8, 12)])
    assert len(tokens) == 12
    assert tokens[3:10].tolist() == list(range(3, 10)) and tokens[5:8].tolist() == [5, 6, 7]


# --------------------------------------------------------------------------- damaged shards are made again


def _pydoc_shards(data_dir: Path) -> tuple[list[Path], list[Path]]:
    return corpora.CORPORA["pydoc"](None).shards(data_dir, "byte")


def _contents(paths: list[Path]) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in paths}


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: raw[: len(raw) // 2], id="truncated"),
        pytest.param(lambda raw: b"\x00" * 4 + raw[4:], id="bad-magic"),
    ],
)
def test_the_advice_for_a_damaged_shard_works(tmp_path: Path, damage):
    train, val = _pydoc_shards(tmp_path)
    before = _contents(train + val)
    shard = train[0]
    shard.write_bytes(damage(shard.read_bytes()))
    with pytest.raises(UserError) as e:
        read_shard(shard)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{shard}: ") and "delete it and re-run" in message
    shard.unlink()  # the advice, exactly
    assert _pydoc_shards(tmp_path) == (train, val)
    assert _contents(train + val) == before
    assert len(read_shard(shard)) == (len(before[shard.name]) - 1024) // 2


def test_a_truncated_or_missing_shard_is_tokenised_again_without_being_asked(tmp_path: Path, caplog):
    train, val = _pydoc_shards(tmp_path)
    before = _contents(train + val)
    train[0].write_bytes(train[0].read_bytes()[:-2])
    val[0].unlink()
    assert _pydoc_shards(tmp_path) == (train, val)
    assert _contents(train + val) == before
    assert f"{train[0]} is {len(before[train[0].name]) - 2} bytes, expected" in caplog.text


def test_done_lists_every_shard_with_its_size(tmp_path: Path):
    train, val = _pydoc_shards(tmp_path)
    done = json.loads((tmp_path / "gpt2/pydoc-byte/DONE").read_text())
    assert done == {"train": {p.name: p.stat().st_size for p in train}, "val": {p.name: p.stat().st_size for p in val}}


def test_an_empty_done_from_an_older_version_means_tokenise_again(tmp_path: Path):
    train, val = _pydoc_shards(tmp_path)
    before = _contents(train + val)
    out = tmp_path / "gpt2/pydoc-byte"
    (out / "DONE").write_text("")  # what shards() wrote before DONE listed the shards
    train[0].unlink()  # deleted as the old advice said: the old DONE stopped the rebuild
    stale = write_shard(out / "train_000007.bin", np.arange(3))  # left by an earlier, longer tokenisation
    assert _pydoc_shards(tmp_path) == (train, val)
    assert _contents(train + val) == before and not stale.exists()
    assert json.loads((out / "DONE").read_text())["train"] == {train[0].name: len(before[train[0].name])}


def test_a_deleted_fineweb10b_shard_is_downloaded_again(tmp_path: Path, monkeypatch):
    mirror = tmp_path / "mirror"
    write_shard(mirror / "fineweb_val_000000.bin", np.array([50256, 1, 2]))
    write_shard(mirror / "fineweb_train_000001.bin", np.array([50256, 10, 11]))
    monkeypatch.setattr(corpora.FineWeb10B, "BASE", mirror.as_uri())
    fineweb = corpora.CORPORA["fineweb10b"]({"GPT2_DATA_FILES": 1})
    train, val = fineweb.shards(tmp_path / "data", "gpt2")
    train[0].write_bytes(train[0].read_bytes()[:-1])
    with pytest.raises(UserError, match="delete it and re-run"):
        read_shard(train[0])
    train[0].unlink()
    assert fineweb.shards(tmp_path / "data", "gpt2") == (train, val)
    assert _tokens(train) == [50256, 10, 11]


def test_corpora_are_a_registry_keyed_by_the_kconfig_suffix():
    assert corpora.CORPORA.symbol("fineweb_edu") == "GPT2_DATASET_FINEWEB_EDU"
    with pytest.raises(UserError, match="unknown text corpus 'nope': allowed values are fineweb10b, fineweb_edu"):
        corpora.CORPORA["nope"]
