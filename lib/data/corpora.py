"""GPT-2 training text: ``CORPORA[name](cfg).shards(data_dir, tokenizer)`` -> (train shard paths, val shard paths).

Text corpora are downloaded once into ``DATA_DIR/<name>/`` (streamed to disk, renamed into place when
complete), split into documents, tokenised with an end-of-text token before every document (in parallel
worker processes for the large ones) and written as llm.c ``.bin`` shards of at most ``SHARD_TOKENS`` tokens
under ``DATA_DIR/gpt2/<name>-<tokenizer>/``. A ``DONE`` file there, written last, lists every shard of the
finished tokenisation with its size in bytes (JSON ``{"train": {name: bytes}, "val": {...}}``); later runs read
the shards it lists, and tokenise again when one of them is missing or has another size (a deleted or truncated
shard is simply made again) or when ``DONE`` lists nothing (written by an older version, or damaged).
FineWeb10B comes already tokenised with GPT-2's BPE in that format and is only downloaded; a shard of it that
is missing is downloaded again.

| name | source | validation split |
| --- | --- | --- |
| pydoc | ``pydoc_data.topics`` (ships with CPython) | last 10% of the topics |
| shakespeare | Karpathy's char-rnn ``tinyshakespeare/input.txt`` (1.1 MB) | last 10% of the text (nanoGPT) |
| tinystories | ``roneneldan/TinyStories`` V2 (GPT-4) train / valid text files | the published valid file |
| fineweb_edu | ``HuggingFaceFW/fineweb-edu`` ``sample/10BT`` parquet files (read with duckdb) | every 100th document |
| fineweb10b | ``kjj0/fineweb10B-gpt2`` pre-tokenised shards (GPT-2 BPE only) | ``fineweb_val_000000.bin`` |
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lib.data.download import fetch
from lib.data.shards import write_shard
from lib.data.text import TOKENIZERS, document_tokens, pydoc_documents
from lib.errors import UserError
from lib.process import usable_cpus
from lib.progress import Meter
from lib.registry import Registry
from lib.results import atomic_write_json

logger = logging.getLogger(__name__)

SHARD_TOKENS = 100_000_000  # per .bin shard, as llm.c's data scripts
HF = "https://huggingface.co/datasets"
EOT_TEXT = "<|endoftext|>"


# --------------------------------------------------------------------------- tokenisation into shards

_worker_tokenizer = None


def _init_worker(name: str) -> None:
    global _worker_tokenizer
    _worker_tokenizer = TOKENIZERS[name]()


def _encode(doc: str) -> np.ndarray:
    return np.array(document_tokens(_worker_tokenizer, doc), dtype=np.uint16)


def tokenize_to_shards(
    documents: Iterable[str],
    tokenizer: str,
    out: Path,
    split: str,
    shard_tokens: int = SHARD_TOKENS,
    processes: int = 1,
) -> list[Path]:
    """Tokenise ``documents`` (each preceded by end-of-text) into ``out/<split>_NNNNNN.bin`` shards of at
    most ``shard_tokens`` tokens, in document order; ``processes`` > 1 encodes in a worker pool. Progress is a
    bar on a terminal, timestamped lines in a log (:class:`lib.progress.Meter`)."""
    paths: list[Path] = []
    buf: list[np.ndarray] = []
    filled = total = 0
    meter = Meter(f"tokenising {out.name} {split}", "documents")

    def flush() -> None:
        nonlocal buf, filled
        if buf:
            paths.append(write_shard(out / f"{split}_{len(paths):06d}.bin", np.concatenate(buf)))
            buf, filled = [], 0

    def consume(tokens: np.ndarray) -> None:
        nonlocal filled, total
        total += len(tokens)
        meter.update(1, f"{total:,} tokens")
        while len(tokens):
            take = tokens[: shard_tokens - filled]
            buf.append(take)
            filled += len(take)
            tokens = tokens[len(take) :]
            if filled == shard_tokens:
                flush()

    if processes > 1:
        with multiprocessing.get_context("spawn").Pool(processes, _init_worker, (tokenizer,)) as pool:
            for tokens in pool.imap(_encode, documents, chunksize=16):
                consume(tokens)
    else:
        _init_worker(tokenizer)
        for doc in documents:
            consume(_encode(doc))
    flush()
    meter.close()
    return paths


# --------------------------------------------------------------------------- corpora


def _hint(directory: Path, files: str) -> str:
    return f"download {files} by hand into {directory.resolve()}/ and re-run"


DONE = "DONE"  # written last into a shard directory: what the finished tokenisation produced


def _sizes(paths: list[Path]) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in paths}


def _complete_shards(out: Path) -> tuple[list[Path], list[Path]] | None:
    """The (train, val) shards ``out/DONE`` lists when every one is there with its listed size; else None,
    logging why (the caller tokenises again)."""
    done = out / DONE
    if not done.is_file():
        return None
    try:
        listing = json.loads(done.read_text())
        splits = [
            sorted((out / name, int(size)) for name, size in listing[split].items()) for split in ("train", "val")
        ]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        logger.warning("%s does not list the shards (older version, or damaged): tokenising again", done)
        return None
    for path, size in splits[0] + splits[1]:
        found = path.stat().st_size if path.is_file() else None
        if found != size:
            what = "missing" if found is None else f"{found} bytes"
            logger.warning("%s is %s, expected %d bytes: tokenising %s again", path, what, size, out)
            return None
    train, val = ([path for path, _ in split] for split in splits)
    return train, val


@dataclass(frozen=True)
class TextCorpus:
    """A corpus of documents: subclasses give ``splits`` (train and validation documents)."""

    name: str
    processes: int = 1  # worker processes for tokenisation (the large corpora use every core)

    def splits(self, data_dir: Path) -> tuple[Iterable[str], Iterable[str]]:
        raise NotImplementedError

    def shards(self, data_dir: Path, tokenizer: str) -> tuple[list[Path], list[Path]]:
        out = data_dir / "gpt2" / f"{self.name}-{tokenizer}"
        done = out / DONE
        if (complete := _complete_shards(out)) is not None:
            return complete
        TOKENIZERS[tokenizer]()  # a tokenizer that cannot load says so before anything is downloaded
        done.unlink(missing_ok=True)  # an interrupted tokenisation must not leave the old listing behind
        train_docs, val_docs = self.splits(data_dir)
        procs = self.processes if self.processes > 0 else usable_cpus()
        val = tokenize_to_shards(val_docs, tokenizer, out, "val", processes=procs)
        train = tokenize_to_shards(train_docs, tokenizer, out, "train", processes=procs)
        for split, paths in (("train", train), ("val", val)):
            for stale in set(out.glob(f"{split}_*.bin")) - set(paths):  # left by an earlier, longer tokenisation
                stale.unlink()
        out.mkdir(parents=True, exist_ok=True)  # no documents at all: no shard made the directory
        atomic_write_json(done, {"train": _sizes(train), "val": _sizes(val)})
        logger.info(
            "tokenised %s with %s: %d train, %d val shards in %s", self.name, tokenizer, len(train), len(val), out
        )
        return train, val


class Pydoc(TextCorpus):
    def splits(self, data_dir: Path) -> tuple[list[str], list[str]]:
        docs = pydoc_documents()
        cut = len(docs) - max(1, round(len(docs) * 0.1))
        return docs[:cut], docs[cut:]


class Shakespeare(TextCorpus):
    URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"

    def splits(self, data_dir: Path) -> tuple[list[str], list[str]]:
        directory = data_dir / "shakespeare"
        path = fetch(self.URL, directory / "input.txt", _hint(directory, "input.txt from " + self.URL))
        text = path.read_text(encoding="utf-8")
        cut = int(len(text) * 0.9)
        return [text[:cut]], [text[cut:]]


def _eot_documents(path: Path) -> Iterator[str]:
    """Documents of a text file where a line ``<|endoftext|>`` ends each one (TinyStories), streamed."""
    lines: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip() == EOT_TEXT:
                if doc := "".join(lines).strip():
                    yield doc
                lines = []
            else:
                lines.append(line)
    if doc := "".join(lines).strip():
        yield doc


class TinyStories(TextCorpus):
    BASE = f"{HF}/roneneldan/TinyStories/resolve/main"
    FILES = ("TinyStoriesV2-GPT4-train.txt", "TinyStoriesV2-GPT4-valid.txt")

    def splits(self, data_dir: Path) -> tuple[Iterator[str], Iterator[str]]:
        directory = data_dir / "tinystories"
        train, val = (
            fetch(f"{self.BASE}/{name}", directory / name, _hint(directory, " and ".join(self.FILES)))
            for name in self.FILES
        )
        return _eot_documents(train), _eot_documents(val)


@dataclass(frozen=True)
class FineWebEdu(TextCorpus):
    files: int = 1  # parquet files of sample/10BT, about 1 GB of text each
    BASE = f"{HF}/HuggingFaceFW/fineweb-edu/resolve/main/sample/10BT"
    VAL_EVERY = 100

    def _documents(self, paths: list[Path]) -> Iterator[tuple[int, str]]:
        try:
            import duckdb
        except ImportError:
            raise UserError("fineweb_edu reads parquet with duckdb: `pip install duckdb`") from None
        index = 0
        con = duckdb.connect()
        for path in paths:
            rows = con.execute("SELECT text FROM read_parquet(?)", [str(path)])
            while batch := rows.fetchmany(4096):
                for (text,) in batch:
                    yield index, text
                    index += 1

    def splits(self, data_dir: Path) -> tuple[Iterator[str], Iterator[str]]:
        directory = data_dir / "fineweb_edu"
        names = [f"{i:03d}_00000.parquet" for i in range(self.files)]
        paths = [fetch(f"{self.BASE}/{n}", directory / n, _hint(directory, ", ".join(names))) for n in names]
        val = (text for i, text in self._documents(paths) if i % self.VAL_EVERY == 0)
        train = (text for i, text in self._documents(paths) if i % self.VAL_EVERY)
        return train, val


@dataclass(frozen=True)
class FineWeb10B:
    """Pre-tokenised GPT-2 shards (modded-nanogpt's source): only downloaded."""

    name: str
    files: int = 1
    BASE = f"{HF}/kjj0/fineweb10B-gpt2/resolve/main"

    def shards(self, data_dir: Path, tokenizer: str) -> tuple[list[Path], list[Path]]:
        if tokenizer != "gpt2":
            raise UserError("fineweb10b is pre-tokenised with GPT-2's BPE: choose GPT2_TOKENIZER=gpt2")
        directory = data_dir / "fineweb10b"
        names = [f"fineweb_train_{i:06d}.bin" for i in range(1, self.files + 1)]
        hint = _hint(directory, "fineweb_val_000000.bin and " + ", ".join(names) + f" from {self.BASE}")
        val = [fetch(f"{self.BASE}/fineweb_val_000000.bin", directory / "fineweb_val_000000.bin", hint)]
        return [fetch(f"{self.BASE}/{n}", directory / n, hint) for n in names], val


# GPT2_DATASET_<NAME> in Kconfig -> CORPORA["<name>"], a builder ``(cfg) -> corpus`` that reads the corpus's own
# settings (GPT2_DATA_FILES) from the config.
CORPORA: Registry[Callable[[Any], TextCorpus | FineWeb10B]] = Registry("text corpus", "GPT2_DATASET")
CORPORA.register("pydoc")(lambda cfg: Pydoc("pydoc"))
CORPORA.register("shakespeare")(lambda cfg: Shakespeare("shakespeare"))
CORPORA.register("tinystories")(lambda cfg: TinyStories("tinystories", processes=0))
CORPORA.register("fineweb_edu")(lambda cfg: FineWebEdu("fineweb_edu", processes=0, files=cfg["GPT2_DATA_FILES"]))
CORPORA.register("fineweb10b")(lambda cfg: FineWeb10B("fineweb10b", cfg["GPT2_DATA_FILES"]))
