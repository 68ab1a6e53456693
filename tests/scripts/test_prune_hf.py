"""A pretrained causal LM in Hugging Face format, end to end without a network: a tiny random OPT and a byte-level
tokenizer saved with ``save_pretrained`` in the test, then ``make prune``'s and ``make analyze``'s mains on that
directory with ``HF_HUB_OFFLINE=1``: the framework's text corpus tokenised by the model's own tokenizer, the model
pruned block by block, the results written under ``RESULTS_DIR/oneshot/<model>/``, the analyses in the database."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lib import results
from lib.analysis import store
from lib.database import build, query
from scripts import analyze, prune

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def opt_with_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OPT (2 blocks, C = 32) and a byte-level tokenizer: one token per byte, ids 2..257; 0 = </s>, 1 = <pad>."""
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    vocab = {"</s>": 0, "<pad>": 1, **{c: i + 2 for i, c in enumerate(alphabet)}}
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    path = tmp_path_factory.mktemp("tiny-opt")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = transformers.OPTConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=2,
        max_position_embeddings=64, word_embed_proj_dim=32, eos_token_id=0, pad_token_id=1, bos_token_id=0,
    )  # fmt: skip
    transformers.OPTForCausalLM(config).save_pretrained(path)
    return path


def test_a_hugging_face_model_is_pruned_and_analysed_offline(
    opt_with_tokenizer: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = str(opt_with_tokenizer)
    # the default .config trains LeNet-5: the corpus comes from the GPT-2 menu's defaults (pydoc)
    settings = f"RESULTS_DIR={tmp_path / 'results'} DATA_DIR={tmp_path / 'data'} ONESHOT_SEQLEN=32"
    settings += " ONESHOT_EVAL_WINDOWS=2"
    common = ["--config", str(tmp_path / "none"), "--set", settings]
    for method in ("wanda", "sparsegpt"):
        assert prune.main([model, "--method", method, "--samples", "4", *common]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith(f"{opt_with_tokenizer.name} sparsegpt 0.5: perplexity ") and "12 Linears" in line
    out = tmp_path / "results" / "oneshot" / opt_with_tokenizer.name
    summary = results.read_json(out / "sparsegpt-0.5" / results.PRUNE_JSON)
    assert summary["calibration"] == {"corpus": "pydoc", "samples": 4, "seqlen": 32, "seed": 0}
    assert summary["sparsity"] == pytest.approx(0.5, abs=0.01)
    ppl = summary["perplexity"]
    assert 100 < ppl["before"] < 1000 and ppl["after"] != ppl["before"]  # a random model over 258 tokens
    assert (out / "wanda-0.5" / "layer1-fc2-0-0-0.5.pt").exists()
    pruned = transformers.AutoModelForCausalLM.from_pretrained(out / "wanda-0.5" / "model")  # save_pretrained's
    assert (pruned.model.decoder.layers[1].fc2.weight == 0).float().mean() == pytest.approx(0.5)
    assert transformers.AutoTokenizer.from_pretrained(out / "wanda-0.5" / "model") is not None

    build(tmp_path / "results")  # the results database holds the model's one-shot results beside the runs'
    _, rows = query(tmp_path / "results", "select matrix, run_id, model, method, target from oneshot order by all")
    assert rows == [(None, None, opt_with_tokenizer.name, m, 0.5) for m in ("sparsegpt", "wanda")]

    assert analyze.main([model, "--samples", "2", *common]) == 0
    _, pairs = store.read(tmp_path / "results", "mask_comparison")
    assert len(pairs) == 12  # sparsegpt-0.5 vs wanda-0.5: 2 blocks x 6 Linears
    columns, clusters = store.read(tmp_path / "results", "coactivation_clusters")
    assert {r[columns.index("source")] for r in clusters} == {opt_with_tokenizer.name}
    assert any(p.name.startswith("tsne-layer0-") for p in (out / "analysis").iterdir())
