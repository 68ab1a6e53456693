"""Tokenizers and the embedded corpus."""

from __future__ import annotations

import pytest

from lib.data import text
from lib.errors import UserError


def test_byte_tokenizer_round_trip_with_document_separators():
    tok = text.ByteTokenizer()
    ids = [t for doc in ["héllo", "x"] for t in text.document_tokens(tok, doc)]
    assert ids == [256, 104, 195, 169, 108, 108, 111, 256, 120]
    assert tok.decode(ids) == "héllox" and tok.vocab_size == 257


def test_embedded_corpus_is_the_python_documentation():
    docs = text.pydoc_documents()
    assert len(docs) > 50 and any("for_stmt" in d or 'The "for" statement' in d for d in docs)
    assert docs == text.pydoc_documents()  # a fixed order


def test_gpt2_tokenizer_without_its_files_is_one_line_saying_where_to_put_them(monkeypatch, tmp_path):
    tiktoken = pytest.importorskip("tiktoken")

    def offline(name):
        raise ConnectionError("Max retries exceeded with url: /encodings/gpt2/vocab.bpe\n(more lines)")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(UserError) as e:
        text.GPT2Tokenizer()
    message = str(e.value)
    assert "\n" not in message and "ConnectionError" in message
    assert str(tmp_path / "cache") in message and "TIKTOKEN_CACHE_DIR" in message and "GPT2_TOKENIZER=byte" in message


def test_tokenizers_are_a_registry_keyed_by_the_kconfig_suffix():
    assert text.TOKENIZERS["byte"] is text.ByteTokenizer and text.TOKENIZERS["gpt2"] is text.GPT2Tokenizer
    assert text.TOKENIZERS.symbol("gpt2") == "GPT2_TOKENIZER_GPT2"
    with pytest.raises(UserError, match="unknown tokenizer 'nope': allowed values are byte, gpt2"):
        text.TOKENIZERS["nope"]
