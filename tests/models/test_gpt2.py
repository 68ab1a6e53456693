"""GPT-2: parameter counts per preset, gating (none is the plain model bit for bit; every other mode changes
the output), the tied head, and seeded sampling."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from lib.pruning.base import PruningSettings, prunable_modules
from models.gpt2.model import GATE_ACTIVATIONS, GATE_POSITIONS, GATES, GPT2, PRESETS, GPT2Config, padded_vocab


def _count(n_layer: int, n_embd: int, block: int, vocab: int) -> int:
    """By hand: token + position embeddings, per layer two LayerNorms (2C each), QKV (3C^2 + 3C), attention
    projection (C^2 + C), MLP (4C^2 + 4C and 4C^2 + C), final LayerNorm; the head is the token embedding."""
    c = n_embd
    per_layer = 2 * 2 * c + (3 * c * c + 3 * c) + (c * c + c) + (4 * c * c + 4 * c) + (4 * c * c + c)
    return vocab * c + block * c + n_layer * per_layer + 2 * c


def test_vocab_is_padded_to_a_multiple_of_64():
    assert padded_vocab(50257) == 50304 and padded_vocab(257) == 320 and padded_vocab(64) == 64


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_parameter_count_per_preset(preset):
    n_layer, n_head, n_embd, block = PRESETS[preset]
    cfg = GPT2Config.preset(preset)
    sizes = (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.vocab_size)
    assert sizes == (n_layer, n_head, n_embd, block, 50304)
    if preset == "medium":
        return  # same formula; 350M parameters are slow to initialise on a CPU
    model = GPT2(cfg)
    assert model.num_params() == _count(n_layer, n_embd, block, 50304)


def test_124m_has_the_published_size():
    model = GPT2(GPT2Config.preset("124m"))
    assert model.num_params() == 124_475_904  # nanoGPT's "124M" with the padded vocab
    assert model.lm_head.weight is model.transformer.wte.weight


def test_custom_sizes_and_shapes():
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=320, bias=False)
    model = GPT2(cfg)
    assert model(torch.zeros(3, 16, dtype=torch.long)).shape == (3, 16, 320)
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))
    with pytest.raises(ValueError, match="longer than block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="not a multiple"):
        GPT2Config(n_head=5, n_embd=32)


def _reference_forward(model: GPT2, idx: torch.Tensor) -> torch.Tensor:
    """An ungated GPT-2 forward written out here from the weights alone."""
    sd = model.state_dict()
    c, nh = model.config.n_embd, model.config.n_head
    b, t = idx.shape
    x = sd["transformer.wte.weight"][idx] + sd["transformer.wpe.weight"][:t]
    for i in range(model.config.n_layer):
        p = f"transformer.h.{i}."

        def ln(z, name, p=p):
            return F.layer_norm(z, (c,), sd[p + name + ".weight"], sd[p + name + ".bias"])

        h = ln(x, "ln_1")
        q, k, v = F.linear(h, sd[p + "attn.c_attn.weight"], sd[p + "attn.c_attn.bias"]).split(c, dim=2)
        q, k, v = (z.view(b, t, nh, c // nh).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).contiguous().view(b, t, c)
        x = x + F.linear(y, sd[p + "attn.c_proj.weight"], sd[p + "attn.c_proj.bias"])
        h = F.gelu(F.linear(ln(x, "ln_2"), sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"]), approximate="tanh")
        x = x + F.linear(h, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
    x = F.layer_norm(x, (c,), sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"])
    return x @ sd["transformer.wte.weight"].T


SMALL = {"n_layer": 2, "n_head": 4, "n_embd": 32, "block_size": 16, "vocab_size": 320}


def test_gate_none_is_the_ungated_model_bit_for_bit():
    torch.manual_seed(0)
    model = GPT2(GPT2Config(**SMALL)).eval()
    assert not any("gate" in name for name, _ in model.named_parameters())
    idx = torch.randint(0, 320, (2, 16))
    assert torch.equal(model(idx), _reference_forward(model, idx))


@pytest.mark.parametrize(
    "gate,pos,act", list(itertools.product([g for g in GATES if g != "none"], GATE_POSITIONS, GATE_ACTIVATIONS))
)
def test_every_gate_mode_changes_the_output(gate, pos, act):
    torch.manual_seed(0)
    plain = GPT2(GPT2Config(**SMALL)).eval()
    gated = GPT2(GPT2Config(**SMALL, attn_gate=gate, attn_gate_pos=pos, attn_gate_act=act)).eval()
    missing, unexpected = gated.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all("gate" in k for k in missing)  # only the gate is new
    idx = torch.randint(0, 320, (2, 16))
    out = gated(idx)
    assert out.shape == plain(idx).shape and not torch.allclose(out, plain(idx), atol=1e-4)
    gate_params = [p for n, p in gated.named_parameters() if "gate" in n]
    expected = {"headwise": (4, 32), "elementwise": (32, 32), "const": (32,)}[gate]
    assert len(gate_params) == 2 and all(p.shape == expected for p in gate_params)  # one per layer


def test_headwise_gate_scales_each_head_by_its_own_score():
    torch.manual_seed(0)
    cfg = GPT2Config(**SMALL, attn_gate="headwise")
    attn = GPT2(cfg).transformer.h[0].attn
    with torch.no_grad():
        attn.gate.weight.zero_()  # every score 0: sigmoid gate 0.5 on every head
    x = torch.randn(1, 16, 32)
    gated = attn(x)
    attn.gate_kind = "none"
    plain = attn(x)
    bias = attn.c_proj.bias
    torch.testing.assert_close(gated - bias, 0.5 * (plain - bias))  # c_proj is linear: half the attention


def test_ns_sigmoid_never_closes():
    s = torch.tensor([-1e4, 0.0, 1e4])
    assert GATE_ACTIVATIONS["ns_sigmoid"](s).tolist() == [0.5, 0.75, 1.0]


def test_tied_head_is_the_excluded_head_for_pruning():
    model = GPT2(GPT2Config(**SMALL))
    names = [name for name, _ in prunable_modules(model, PruningSettings(exclude_head=True, exclude_first_conv=True))]
    assert "lm_head" not in names
    assert names[-1] == "transformer.h.1.mlp.c_proj"  # the last MLP projection is pruned like the others
    assert len(names) == 2 * 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj per layer


def test_sampling_is_deterministic_under_a_seed():
    torch.manual_seed(0)
    model = GPT2(GPT2Config(**SMALL)).eval()
    prompt = torch.tensor([[1, 2, 3]])

    def sample(seed):
        return model.generate(prompt, 10, temperature=0.8, top_k=20, generator=torch.Generator().manual_seed(seed))

    a, b = sample(7), sample(7)
    assert a.shape == (1, 13) and torch.equal(a, b) and torch.equal(a[:, :3], prompt)
    assert not torch.equal(sample(7), sample(8))
    greedy = model.generate(prompt, 5, temperature=0)
    assert torch.equal(greedy, model.generate(prompt, 5, temperature=0))


def test_flops_per_token_follows_6n_plus_attention():
    cfg = GPT2Config.preset("tiny")
    model = GPT2(cfg)
    n = model.num_params() - cfg.block_size * cfg.n_embd
    assert model.flops_per_token() == 6 * n + 12 * 4 * 128 * 256
    assert math.isclose(model.flops_per_token() / 1e6, (6 * n + 1_572_864) / 1e6)


def _plan(name: str) -> list[dict]:
    from lib import config as cfgmod
    from lib.matrix import expand

    return [r.axes for r in expand(cfgmod.load(cfgmod.DEFCONFIGS / name)).runs]


def test_banded_fc_comparison_is_baseline_plus_fc1_fc2_both_at_three_widths():
    cells = {(a["pruning"], a["fc1_band"], a["fc2_band"]) for a in _plan("gpt2-banded-fc-comparison")}
    widths = (1024, 512, 256)
    assert cells == {("none", None, None)} | {("banded", w, 0) for w in widths} | {("banded", 0, w) for w in widths} | {
        ("banded", w, w) for w in widths
    }


def test_banded_fc1_tinystories_is_fc1_1024_vs_dense():
    cells = {(a["pruning"], a["fc1_band"], a["fc2_band"]) for a in _plan("gpt2-banded-fc1-tinystories")}
    assert cells == {("none", None, None), ("banded", 1024, 0)}


def test_adamwprune_bitter_is_adamwspam_magnitude_vs_the_published_variants_at_half_sparsity():
    """The published table: AdamWSpam + magnitude and bitter0-4 (issue 14; bitter7 is not in it)."""
    cells = {
        (a["optimizer"], a["variant"], a["pruning"], a["target_sparsity"]) for a in _plan("gpt2-adamwprune-bitter")
    }
    variants = ("bitter0", "bitter1", "bitter2", "bitter3", "bitter4")
    assert cells == {("adamwspam", None, "magnitude", 0.5)} | {("adamwprune", v, "state", 0.5) for v in variants}
