"""Tokenizers for the GPT-2 corpora: ``GPT2_TOKENIZER_<NAME>`` in Kconfig -> ``TOKENIZERS["<name>"]``, a class whose
instances have ``vocab_size``, ``eot``, ``encode(text) -> list[int]`` and ``decode(ids) -> str``.

- ``byte``: UTF-8 bytes 0..255 plus an end-of-text token 256 (vocab 257). Needs nothing, so the embedded corpus
  trains anywhere; a byte model's loss is directly comparable to the corpus's byte entropy.
- ``gpt2``: tiktoken's "gpt2" BPE (vocab 50257, ``<|endoftext|>`` = 50256). tiktoken downloads the encoding's
  two files once into its cache; when that is impossible the error says so in one line and where to put them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable

from lib.errors import UserError
from lib.registry import Registry

TOKENIZERS: Registry[type] = Registry("tokenizer", "GPT2_TOKENIZER")


@TOKENIZERS.register("byte")
class ByteTokenizer:
    name = "byte"
    vocab_size = 257
    eot = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def tiktoken_cache_dir() -> str:
    """Where tiktoken keeps downloaded encodings (its own rule: TIKTOKEN_CACHE_DIR, DATA_GYM_CACHE_DIR, or
    <tmp>/data-gym-cache)."""
    return (
        os.environ.get("TIKTOKEN_CACHE_DIR")
        or os.environ.get("DATA_GYM_CACHE_DIR")
        or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    )


@TOKENIZERS.register("gpt2")
class GPT2Tokenizer:
    name = "gpt2"
    vocab_size = 50257
    eot = 50256

    def __init__(self) -> None:
        try:
            import tiktoken
        except ImportError:
            message = "the gpt2 tokenizer needs tiktoken: `pip install tiktoken` (make quickstart installs it)"
            raise UserError(message) from None
        try:
            self.encoding = tiktoken.get_encoding("gpt2")
        except Exception as e:  # network errors come as requests/urllib/OSError types, whatever tiktoken uses
            reason = f"{type(e).__name__}: {e}".splitlines()[0][:160]
            raise UserError(
                f"tiktoken could not load its GPT-2 encoding ({reason}); it fetches vocab.bpe and encoder.json "
                f"once from openaipublic.blob.core.windows.net into {tiktoken_cache_dir()}: run once on a machine "
                "with internet and copy that directory here (or point TIKTOKEN_CACHE_DIR at a copy), or use "
                "GPT2_TOKENIZER=byte"
            ) from None

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self.encoding.decode([i for i in ids if i != self.eot])


def document_tokens(tokenizer, doc: str) -> list[int]:
    """A document's tokens, preceded by the end-of-text token (GPT-2's document separator)."""
    return [tokenizer.eot, *tokenizer.encode(doc)]


def pydoc_documents() -> list[str]:
    """The embedded corpus: the Python documentation topics that ship with every CPython (``pydoc_data``),
    one document per topic, in sorted topic order (about 0.47 MB of English and code in CPython 3.11)."""
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]
