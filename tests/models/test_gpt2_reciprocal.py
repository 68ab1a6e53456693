"""Reciprocal attention and the reciprocal MLP (issue 17): the folded SDPA against a direct (B, H, T, T)
computation, the low-rank variant, the start as the plain model, causality of every variant (and the check's
failure on a deliberately non-causal one), gradients that leave zero, the axes and their Kconfig errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from lib import config as cfgmod
from lib.errors import UserError
from lib.matrix import expand
from models.gpt2.model import GPT2, CausalSelfAttention, GPT2Config, causal_leak
from models.gpt2.train import model_config

VARIANTS = [("none", 0.0), ("exact", 0.0), ("lowrank", 0.0), ("none", 0.25), ("exact", 0.25), ("lowrank", 0.25)]
KV_KEEP = [1.0, 0.4]


def _cfg(**kw) -> GPT2Config:
    return GPT2Config(**{"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 64, "vocab_size": 64, **kw})


def _direct(attn: CausalSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """The reciprocal attention of one block written out: (B, H, T, T) logits, mask, softmax, @ V, projection."""
    b, t, c = x.shape
    q, k, v = attn.c_attn(x).split(c, dim=2)
    q, k, v = (z.view(b, t, attn.n_head, -1).transpose(1, 2).double() for z in (q, k, v))
    r, hs = attn.ra_rank, q.shape[-1]
    w_std, w_rec = attn.ra_std.double().view(1, -1, 1, 1), attn.ra_rec.double().view(1, -1, 1, 1)
    s = q @ k.transpose(-1, -2)  # S[i, j] = q_i . k_j
    s_rec = (q[..., :r] @ k[..., :r].transpose(-1, -2)).transpose(-1, -2)  # its transpose over the first r dims
    logits = (w_std * s + w_rec * s_rec) / math.sqrt(hs)
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    y = torch.softmax(logits.masked_fill(~causal, float("-inf")), dim=-1) @ v
    return F.linear(y.transpose(1, 2).reshape(b, t, c).float(), attn.c_proj.weight, attn.c_proj.bias)


@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("kind", ["exact", "lowrank"])
def test_the_folded_sdpa_equals_the_direct_computation(kind: str, per_head: bool) -> None:
    torch.manual_seed(0)
    attn = CausalSelfAttention(_cfg(reciprocal=kind, ra_rank=5, ra_per_head=per_head)).eval()
    with torch.no_grad():  # mixing weights away from their start, different per head when per head
        attn.ra_std.copy_(torch.tensor([0.8, 1.3][: attn.ra_std.numel()]))
        attn.ra_rec.copy_(torch.tensor([0.6, -0.4][: attn.ra_rec.numel()]))
    assert attn.ra_rank == (16 if kind == "exact" else 5)
    x = torch.randn(3, 20, 32)
    torch.testing.assert_close(attn(x), _direct(attn, x), atol=2e-6, rtol=1e-5)


def test_with_w_rec_zero_reciprocal_attention_is_standard_attention() -> None:
    """Bit for bit is not possible through one folded SDPA call: the kernel sums each logit over hs + r
    dimensions, r of them exact zeros, in another grouping than over hs (the difference is a float32 rounding,
    about 1e-6). What holds exactly is tested too: the mixed logits equal the standard ones in float64."""
    torch.manual_seed(0)
    plain, reciprocal = CausalSelfAttention(_cfg()), CausalSelfAttention(_cfg(reciprocal="exact"))
    reciprocal.load_state_dict(plain.state_dict(), strict=False)  # same projections; w_std = 1, w_rec = 0
    x = torch.randn(2, 33, 32)
    with torch.no_grad():
        diff = (plain(x) - reciprocal(x)).abs().max().item()
        assert diff < 2e-6
        q = torch.randn(1, 2, 7, 16, dtype=torch.float64)
        k = torch.randn(1, 2, 7, 16, dtype=torch.float64)
        fold = torch.cat([1.0 * q, 0.0 * k], -1) @ torch.cat([k, q], -1).transpose(-1, -2)
        assert torch.equal(fold, q @ k.transpose(-1, -2))


@pytest.mark.parametrize("keep", KV_KEEP)
@pytest.mark.parametrize(("kind", "fraction"), VARIANTS)
def test_every_variant_is_causal_and_starts_as_the_plain_model_in_its_loss(kind: str, fraction: float, keep) -> None:
    torch.manual_seed(0)
    plain = GPT2(_cfg())
    variant = GPT2(_cfg(reciprocal=kind, rmlp_fraction=fraction, kv_keep=keep))
    variant.load_state_dict(plain.state_dict(), strict=False)
    idx = torch.randint(64, (2, 40))
    with torch.no_grad():
        if keep == 1.0:  # KV pruning changes the model from the start (it drops keys)
            torch.testing.assert_close(variant(idx), plain(idx), atol=2e-5, rtol=1e-5)
        for block in variant.transformer.h:  # away from the start: still causal
            if kind != "none":
                block.attn.ra_rec.fill_(0.9)
            if fraction:
                block.mlp.rmlp_alpha.fill_(0.5)
    assert causal_leak(variant) == 0.0 and causal_leak(variant, 40, 0) == 0.0


def test_the_reciprocal_mlp_at_its_start_is_the_standard_mlp_bit_for_bit() -> None:
    torch.manual_seed(0)
    plain, rmlp = GPT2(_cfg()), GPT2(_cfg(rmlp_fraction=0.25))
    rmlp.load_state_dict(plain.state_dict(), strict=False)
    assert rmlp.transformer.h[0].mlp.rmlp_units == 32  # 0.25 of 4 x 32
    idx = torch.randint(64, (2, 40))
    with torch.no_grad():
        assert torch.equal(rmlp(idx), plain(idx))


def test_the_leak_check_catches_a_model_that_reads_the_future(monkeypatch: pytest.MonkeyPatch) -> None:
    model = GPT2(_cfg(reciprocal="exact"))
    attend = CausalSelfAttention._attend

    def peeking(self, q, k, v, cache=None):  # the published KV-pruning bug's kind: a softmax without the mask
        return F.scaled_dot_product_attention(q, k, v) if self.reciprocal != "none" else attend(self, q, k, v, cache)

    monkeypatch.setattr(CausalSelfAttention, "_attend", peeking)
    assert causal_leak(model) > 1e-3


def test_the_mixing_weights_move_in_a_short_training_run() -> None:
    torch.manual_seed(0)
    model = GPT2(_cfg(reciprocal="lowrank", ra_rank=4, rmlp_fraction=0.25))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx = torch.randint(64, (8, 33))
    for _ in range(5):
        logits = model(idx[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    for block in model.transformer.h:
        assert block.attn.ra_rec.abs().item() > 1e-3 and block.attn.ra_std.item() != 1.0
        assert block.mlp.rmlp_alpha.abs().item() > 1e-3


def test_the_axes_and_their_errors() -> None:
    base = ["MODEL_LENET5=n", "MODEL_GPT2=y", "PRUNING_MAGNITUDE=n", "OPTIMIZER_SGD=n"]
    cfg = cfgmod.from_defaults([*base, "ATTN_RECIPROCAL_EXACT=y", "ATTN_RECIPROCAL_LOWRANK=y", "MLP_RECIPROCAL_ON=y"])
    runs = expand(cfg).runs
    assert sorted(r.run_id for r in runs) == sorted(
        f"gpt2{ra}{rmlp}-adamw-none-seed0" for ra in ("", "-raexact", "-ralowrank") for rmlp in ("", "-rmlp")
    )
    lowrank = next(r for r in runs if r.axes["reciprocal"] == "lowrank" and r.axes["rmlp"] == "on")
    model_cfg = model_config(lowrank.cfg, lowrank.axes, 257)
    assert (model_cfg.reciprocal, model_cfg.ra_rank, model_cfg.rmlp_fraction) == ("lowrank", 8, 0.25)
    big_rank = cfgmod.from_defaults([*base, "ATTN_RECIPROCAL_LOWRANK=y", "ATTN_RECIPROCAL_RANK=32"])
    spec = next(r for r in expand(big_rank).runs if r.axes["reciprocal"] == "lowrank")
    with pytest.raises(UserError, match="ATTN_RECIPROCAL_RANK=32 is not below the head dimension 32"):
        model_config(spec.cfg, spec.axes, 257)
    with pytest.raises(UserError, match="MLP_RECIPROCAL_FRACTION"):
        cfgmod.from_defaults([*base, "MLP_RECIPROCAL_ON=y", "MLP_RECIPROCAL_FRACTION=0"])


def test_flops_per_token_count_the_folded_scores_and_the_reciprocal_mlp() -> None:
    """GPT-2 tiny (4 layers, 4 heads, C = 128, T = 256): exact RA scores over 128 + 4·32 dimensions, +6·4·128·256;
    low-rank r = 8 over 128 + 4·8, +6·4·32·256; R-MLP at 0.25 multiplies 128 units once more, +6·4·128·128."""
    tiny = {"vocab_size": 320}
    plain = GPT2(GPT2Config.preset("tiny", **tiny)).flops_per_token()
    mixing = 6 * 4 * 2  # w_std and w_rec of each layer are parameters too, in 6N
    assert GPT2(GPT2Config.preset("tiny", reciprocal="exact", **tiny)).flops_per_token() - plain == 786_432 + mixing
    lowrank = GPT2(GPT2Config.preset("tiny", reciprocal="lowrank", ra_rank=8, **tiny))
    assert lowrank.flops_per_token() - plain == 196_608 + mixing
    rmlp = GPT2(GPT2Config.preset("tiny", rmlp_fraction=0.25, **tiny))
    # its alpha and gate are parameters too (1 + 128 per layer: 6·4·129 in 6N)
    assert rmlp.flops_per_token() - plain == 393_216 + 6 * 4 * 129


@pytest.mark.parametrize("keep", KV_KEEP)
@pytest.mark.parametrize(("kind", "fraction"), VARIANTS)
@pytest.mark.parametrize("gate", ["none", "headwise"])
def test_decoding_with_the_kv_cache_equals_running_the_whole_context(
    kind: str, fraction: float, gate: str, keep
) -> None:
    """A prompt of 5 tokens fed as 3 + 1 + 1 through the cache gives the logits of one full forward pass (the
    reciprocal term reads the cached queries of earlier tokens); greedy generation with and without the cache
    gives the same tokens, also once the context (16) is full and slides."""
    torch.manual_seed(0)
    model = GPT2(
        _cfg(
            block_size=16, reciprocal=kind, rmlp_fraction=fraction, attn_gate=gate, attn_gate_pos="value", kv_keep=keep
        )
    ).eval()
    with torch.no_grad():
        for block in model.transformer.h:
            if kind != "none":
                block.attn.ra_rec.fill_(0.7)
            if fraction:
                block.mlp.rmlp_alpha.fill_(0.3)
        prompt = torch.randint(64, (2, 5))
        cache = model.new_cache()
        steps = [model(prompt[:, :3], cache), model(prompt[:, 3:4], cache), model(prompt[:, 4:], cache)]
        torch.testing.assert_close(torch.cat(steps, dim=1), model(prompt), atol=1e-5, rtol=1e-5)
        assert cache[0]["k"].shape == (2, 2, 5, 16) and ("q" in cache[0]) == (kind != "none")
        with pytest.raises(ValueError, match="sequence of 17 tokens is longer than block_size 16"):
            model(torch.zeros(2, 12, dtype=torch.long), cache)
    cached = model.generate(prompt, 30, temperature=0)
    assert torch.equal(cached, model.generate(prompt, 30, temperature=0, use_cache=False))


def test_kv_pruning_keeps_the_keys_of_most_accumulated_mass_by_hand() -> None:
    """One head, 6 positions, keep 0.5, values = the identity so each output row is the query's attention weights.
    Row p keeps ceil(0.5 (p + 1)) keys: its own, then those of largest mass A[p, j] = sum over queries i <= p of
    the causal softmax P[i, j] (computed here directly); the weights are the softmax over the kept logits."""
    torch.manual_seed(0)
    attn = CausalSelfAttention(_cfg(n_head=1, n_embd=8, kv_keep=0.5))
    q, k = torch.randn(1, 1, 6, 8), torch.randn(1, 1, 6, 8)
    values = torch.eye(6).view(1, 1, 6, 6)
    weights, mass = attn._kv_pruned(q, k, values, 0, None, None)
    logits = (q @ k.transpose(-1, -2))[0, 0] / math.sqrt(8)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    p = torch.softmax(logits.masked_fill(~causal, float("-inf")), dim=-1)
    accumulated = p.cumsum(0)
    for row in range(6):
        quota = math.ceil(0.5 * (row + 1))
        others = sorted(range(row), key=lambda j: -accumulated[row, j].item())[: quota - 1]
        kept = sorted([row, *others])
        assert (weights[0, 0, row] > 0).nonzero().flatten().tolist() == kept, row
        expected = torch.softmax(logits[row, kept], dim=-1)
        torch.testing.assert_close(weights[0, 0, row, kept], expected)
    torch.testing.assert_close(mass[0, 0], accumulated[-1])  # what the cache carries on


def test_the_mlp_ratio_sets_fc1_to_hold_that_many_attention_parameters() -> None:
    """C = 128: attention's weights 4·128² = 65,536 per block; 1:2.5 gives F = 2·2.5·128 = 640 (a multiple of 64)
    and MLP weights 2·128·640 = 163,840 = 2.5 x 65,536; 1:2 keeps GPT-2's 4C; the axis names its runs."""
    model = GPT2(GPT2Config.preset("tiny", vocab_size=320, mlp_ratio=2.5))
    mlp = model.transformer.h[0].mlp
    assert (mlp.c_fc.out_features, mlp.c_proj.in_features) == (640, 640)
    assert mlp.c_fc.weight.numel() + mlp.c_proj.weight.numel() == 163_840 == 2.5 * 4 * 128**2
    assert GPT2(GPT2Config.preset("tiny", vocab_size=320)).transformer.h[0].mlp.c_fc.out_features == 512
    assert GPT2Config(n_embd=96, n_head=4, mlp_ratio=1.5).mlp_hidden == 320  # 288 rounded to 64s
    base = ["MODEL_LENET5=n", "MODEL_GPT2=y", "PRUNING_MAGNITUDE=n", "OPTIMIZER_SGD=n", "GPT2_MLP_RATIOS=2 2.5"]
    runs = expand(cfgmod.from_defaults(base)).runs
    assert [r.run_id for r in runs] == ["gpt2-adamw-none-seed0", "gpt2-mlp2.5-adamw-none-seed0"]
    assert model_config(runs[1].cfg, runs[1].axes, 257).mlp_ratio == 2.5


def test_the_published_ratio_ablation_steps_0_and_2_at_their_settings() -> None:
    """The published RATIO ablation (mcgrof/knlp defconfigs/old/gpt2-ratio-ablation): GPT-2 124M, FC1 3072 at
    1:2 and 3840 at 1:2.5, 10,400 iterations of 8 x 8 sequences of 1024 tokens on 4 GPUs, AdamWSpam."""
    from models.gpt2.model import MLP

    cfg = cfgmod.load(cfgmod.DEFCONFIGS / "gpt2-ratio-ablation-124m")
    runs = expand(cfg).runs
    widths = [MLP(model_config(r.cfg, r.axes, 50304)).c_fc.out_features for r in runs]
    assert [(r.axes["mlp_ratio"], w) for r, w in zip(runs, widths, strict=True)] == [(2.0, 3072), (2.5, 3840)]
    published = {
        "GPT2_SIZE": "124m",
        "GPT2_DATASET": "fineweb_edu",
        "GPT2_MAX_ITERS": 10_400,
        "BATCH_SIZE": 8,
        "GPT2_GRAD_ACCUM": 8,
        "DDP_PROCS": 4,
        "ADAMWSPAM_LR": 6e-4,
        "LR_WARMUP_STEPS": 2000,
        "LR_MIN_RATIO": 0.1,  # to 6e-5
        "GPT2_DROPOUT": 0.1,
        "SPAM_THRESHOLD": 50.0,
        "SPAM_RESET_INTERVAL": 1000,
        "SPAM_WARMUP_STEPS": 1000,
        "PRECISION": "bf16",
    }
    assert {k: cfg[k] for k in published} == published
    assert {r.axes["optimizer"] for r in runs} == {"adamwspam"} and [r.axes["seed"] for r in runs] == [0, 0]


def test_kv_pruning_quotas_forgive_the_share_rounding() -> None:
    """0.4 · 5 = 2.0000000000000004 in float64: the query at position 4 keeps 2 keys, not 3."""
    attn = CausalSelfAttention(_cfg(n_head=1, n_embd=8, kv_keep=0.4))
    q = k = torch.randn(1, 1, 5, 8, dtype=torch.float64)
    weights, _ = attn._kv_pruned(q, k, torch.eye(5, dtype=torch.float64).view(1, 1, 5, 5), 0, None, None)
    assert [(w > 0).sum().item() for w in weights[0, 0]] == [1, 1, 2, 2, 2]  # ceil(0.4), ceil(0.8), ... ceil(2.0)


@pytest.mark.parametrize(("kind", "keep"), [("none", 1.0), ("exact", 1.0), ("lowrank", 0.5)])
def test_mla_caches_the_latent_alone_and_decodes_as_a_full_pass(kind: str, keep: float) -> None:
    """Latent L = 8 for 2 heads of 16: the cache holds (B, T, 8) per layer, not keys and values (B, 2, T, 16)
    each (plus the cached queries of reciprocal attention, the mass of KV pruning); pieces through it give the
    full pass's logits; greedy generation with and without it agrees; causal."""
    torch.manual_seed(0)
    model = GPT2(_cfg(block_size=16, mla_latent=8, reciprocal=kind, ra_rank=4, kv_keep=keep, attn_gate="headwise"))
    model.eval()
    with torch.no_grad():
        for block in model.transformer.h:
            if kind != "none":
                block.attn.ra_rec.fill_(0.7)
        prompt = torch.randint(64, (2, 9))
        cache = model.new_cache()
        steps = [model(prompt[:, :3], cache), model(prompt[:, 3:4], cache), model(prompt[:, 4:], cache)]
        torch.testing.assert_close(torch.cat(steps, dim=1), model(prompt), atol=1e-5, rtol=1e-5)
    assert cache[0]["latent"].shape == (2, 9, 8) and "k" not in cache[0] and "v" not in cache[0]
    assert ("q" in cache[0]) == (kind != "none") and ("mass" in cache[0]) == (keep < 1)
    assert causal_leak(model) == 0.0
    assert torch.equal(model.generate(prompt, 20, temperature=0), model.generate(prompt, 20, 0, use_cache=False))


def test_mla_weights_and_the_ratio_that_counts_them() -> None:
    """C = 128, L = 32: attention 2·128² + 3·128·32 = 45,056 weights per block (against 65,536); at 1:2 the MLP
    width is 2 · 45,056 / 256 = 352, rounded to 384 (a multiple of 64)."""
    cfg = GPT2Config.preset("tiny", vocab_size=320, mla_latent=32)
    assert cfg.attention_weights == 45_056 and cfg.mlp_hidden == 384
    attn = GPT2(cfg).transformer.h[0].attn
    assert sum(m.weight.numel() for m in (attn.c_q, attn.c_kv_down, attn.c_k_up, attn.c_v_up, attn.c_proj)) == 45_056
    assert GPT2(cfg).transformer.h[0].mlp.c_fc.out_features == 384
    with pytest.raises(ValueError, match="cannot gate the values"):
        GPT2Config(mla_latent=8, attn_gate="headwise", attn_gate_pos="value")
    base = ["MODEL_LENET5=n", "MODEL_GPT2=y", "PRUNING_MAGNITUDE=n", "OPTIMIZER_SGD=n", "GPT2_MLA_LATENTS=0 32"]
    runs = expand(cfgmod.from_defaults(base)).runs
    assert [r.run_id for r in runs] == ["gpt2-adamw-none-seed0", "gpt2-mla32-adamw-none-seed0"]
    assert model_config(runs[1].cfg, runs[1].axes, 257).mla_latent == 32
    gated = cfgmod.from_defaults([*base, "ATTN_GATE_HEADWISE=y", "ATTN_GATE_POS_VALUE=y", "ATTN_GATE_POS_SDPA=n"])
    spec = next(r for r in expand(gated).runs if r.axes["mla"] and r.axes["attn_gate_pos"] == "value")
    with pytest.raises(UserError, match="GPT2_MLA_LATENTS=32 with value gating"):
        model_config(spec.cfg, spec.axes, 257)
