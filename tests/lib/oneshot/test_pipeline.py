"""The one-shot pipeline on a tiny random OPT (transformers, saved and loaded from a directory): per-layer files,
perplexity, and calibration that is really sequential (block 1 sees block 0's pruned outputs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lib.oneshot import ONESHOT, LayerStats, OneShotMethod
from lib.oneshot.models import load_hf
from lib.oneshot.pipeline import perplexity, prune_model, target_name, windows

transformers = pytest.importorskip("transformers")

VOCAB = 64


@pytest.fixture(scope="module")
def opt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = transformers.OPTConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, ffn_dim=32, num_attention_heads=2,
        max_position_embeddings=64, word_embed_proj_dim=16,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("opt")
    transformers.OPTForCausalLM(config).save_pretrained(path)
    return path


CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # HF GPT-2's Conv1D modules in a block


def calibration(count: int = 4, length: int = 16) -> torch.Tensor:
    return windows(
        torch.randint(0, VOCAB, (500,), generator=torch.Generator().manual_seed(1)).numpy(), count, length, 0
    )


@pytest.mark.parametrize("method", [m for m in ("magnitude", "wanda", "sparsegpt") if m in ONESHOT])
def test_prune_a_tiny_opt_writes_the_named_files(opt_dir: Path, tmp_path: Path, method: str) -> None:
    lm = load_hf(str(opt_dir))
    ids = calibration()
    before = perplexity(lm, ids)
    result = prune_model(lm, ONESHOT[method](), 0.5, None, ids, tmp_path)
    after = perplexity(lm, ids)
    assert before > 1 and after > 1 and after != before
    components = [r.component for r in result.layers]
    attn = [f"self_attn.{p}_proj" for p in ("k", "v", "q", "out")]
    assert components == [*attn, "fc1", "fc2"] * 2  # module paths in the block, as the published files name them
    for r in result.layers:
        assert r.sparsity == pytest.approx(0.5, abs=0.07)
        saved = torch.load(tmp_path / r.file)
        assert r.file == f"layer{r.block}-{r.component}-0-0-0.5.pt"
        assert torch.equal(saved["weight"] == 0, ~saved["mask"]) or method == "sparsegpt"
    assert (tmp_path / "layer1-fc1-0-0-0.5.pt").exists() and (tmp_path / "layer0-self_attn.q_proj-0-0-0.5.pt").exists()


def test_target_names() -> None:
    assert target_name(0.5, None) == "0.5" and target_name(0.7, (2, 4)) == "0.5-2of4"


class Spy(OneShotMethod):
    """Magnitude pruning that keeps each call's input norms."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def prune(self, weight, stats: LayerStats, sparsity, pattern=None):
        self.seen.append(stats.sq_norms.clone())
        return ONESHOT["magnitude"]().prune(weight, stats, sparsity, pattern)


def block1_q_inputs(lm, ids: torch.Tensor) -> torch.Tensor:
    stats = LayerStats(16)
    hook = lm.blocks()[1].self_attn.q_proj.register_forward_pre_hook(lambda m, args: stats.add(args[0]))
    with torch.no_grad():
        lm.logits(ids)
    hook.remove()
    return stats.sq_norms


def test_calibration_is_sequential(opt_dir: Path) -> None:
    """Block 1's statistics are those of the model whose block 0 is already pruned, not of the dense one."""
    lm = load_hf(str(opt_dir))
    ids = calibration()
    dense = block1_q_inputs(lm, ids)
    spy = Spy()
    prune_model(lm, spy, 0.5, None, ids)
    q1 = spy.seen[6 + 2]  # block 1: k, v, q ...
    torch.testing.assert_close(q1, block1_q_inputs(lm, ids))  # q_proj's input does not depend on block 1's weights
    assert not torch.allclose(q1, dense, rtol=1e-3)


def test_hf_gpt2_conv1d_is_pruned_as_linears_and_saved_back_as_conv1d(tmp_path: Path) -> None:
    """HF's GPT-2 keeps its weights in Conv1D (in x out): they are pruned as the equivalent Linears (same logits),
    each row of the Linear (an output feature) being a column of the Conv1D, and saved back in Conv1D's layout."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=32)
    original = transformers.GPT2LMHeadModel(config).eval()
    original.save_pretrained(tmp_path / "gpt2")
    lm = load_hf(str(tmp_path / "gpt2"))
    assert lm.transposed == tuple(f"transformer.h.{i}.{m}" for i in range(2) for m in CONV1D)
    ids = calibration()
    with torch.no_grad():
        torch.testing.assert_close(lm.logits(ids), original(input_ids=ids).logits)
    result = prune_model(lm, ONESHOT["wanda"](), 0.5, None, ids, tmp_path / "out")
    assert [r.component for r in result.layers[:4]] == list(CONV1D)
    saved = lm.save(tmp_path / "out")
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(saved).eval()
    conv = reloaded.transformer.h[1].mlp.c_fc  # Conv1D again: (in, out)
    assert type(conv).__name__ == "Conv1D" and tuple(conv.weight.shape) == (16, 64)
    mask = torch.load(tmp_path / "out" / "layer1-mlp.c_fc-0-0-0.5.pt")["mask"]  # (out, in): the Linear's
    assert torch.equal(conv.weight.t() != 0, mask)
    # Wanda's per-output-row rule: every output feature (a Conv1D column) keeps half of its inputs
    assert ((conv.weight != 0).sum(0) == 8).all()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, lm.logits(ids))


def test_the_analysis_compares_what_make_prune_saved(opt_dir: Path, tmp_path: Path) -> None:
    """lib.analysis reads the pipeline's files: Wanda against SparseGPT at 50%, and 2:4 against unstructured,
    line up layer by layer."""
    from lib.analysis.masks import compare_dirs

    ids = calibration()
    for method, pattern in (("wanda", None), ("sparsegpt", None), ("wanda", (2, 4))):
        out = tmp_path / f"{method}-{target_name(0.5, pattern)}"
        prune_model(load_hf(str(opt_dir)), ONESHOT[method](), 0.5, pattern, ids, out)
    rows = compare_dirs(tmp_path / "wanda-0.5", tmp_path / "sparsegpt-0.5")
    assert len(rows) == 12 and all(0 < r["jaccard"] < 1 for r in rows)  # overlapping, not equal masks
    ablation = compare_dirs(tmp_path / "wanda-0.5-2of4", tmp_path / "wanda-0.5")
    assert len(ablation) == 12 and all(r["density_a"] == pytest.approx(0.5) for r in ablation)


def test_a_llama_style_model_runs_block_by_block_and_prunes(tmp_path: Path) -> None:
    """LLaMA naming (self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj) and its rotary position embeddings: the
    blocks run one by one on the captured arguments give the model's own logits, and every Linear is pruned."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64,
    )  # fmt: skip
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "llama")
    lm = load_hf(str(tmp_path / "llama"))
    ids = calibration()
    with torch.no_grad():
        hidden, context = lm.embed(ids)
        for block in lm.blocks():
            hidden = lm.run_block(block, hidden, context)
        torch.testing.assert_close(lm.model.lm_head(lm.model.model.norm(hidden)), lm.logits(ids))
    result = prune_model(lm, ONESHOT["sparsegpt"](), 0.5, (2, 4), ids, tmp_path / "out")
    attn = [f"self_attn.{p}_proj" for p in "qkvo"]
    assert [r.component for r in result.layers] == [*attn, "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"] * 2
    assert all(r.sparsity == pytest.approx(0.5) for r in result.layers)  # 2:4 keeps exactly half
    assert (tmp_path / "out" / "layer1-mlp.down_proj-0-0-0.5.pt").exists()
