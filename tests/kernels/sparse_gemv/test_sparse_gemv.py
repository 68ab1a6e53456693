"""The reference's semantics and calibration, SparseGemvLinear's reference path, the kernel's take-over of GPT-2's
projections, its Kconfig knobs, and `make sample`'s perplexity line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

import kernels
from kernels.sparse_gemv import SparseGemvKernel
from kernels.sparse_gemv.reference import (
    SparseGemvLinear,
    as_fp32,
    calibrate,
    sparse_linear,
    sparsify,
    threshold_for,
)
from lib import config as cfgmod
from lib.config import Config
from lib.errors import UserError
from models.gpt2.model import GPT2, GPT2Config
from scripts import sample
from tests.helpers import gpt2_run


def test_sparsify_drops_entries_at_or_below_the_threshold() -> None:
    x = torch.tensor([-1.0, -0.5, 0.0, 0.25, 0.5, 0.5001, 2.0])
    assert torch.equal(sparsify(x, 0.5), torch.tensor([-1.0, 0.0, 0.0, 0.0, 0.0, 0.5001, 2.0]))
    half = x.half()  # compared in fp32, where fp16 is exact: the fp16 value nearest 0.5001 is 0.5, dropped
    assert sparsify(half, 0.5).tolist() == [-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]
    assert torch.equal(sparsify(x, 0.0), x)  # threshold 0 drops only zeros: dense


@pytest.mark.parametrize(
    ("magnitudes", "sparsity", "threshold"),
    [
        ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 0.5, 0.5),  # 5 of 10 at or below 0.5
        ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 0.3, 0.3),  # ceil(0.3·10) = 3, not 4
        ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 0.35, 0.4),  # ceil(3.5) = 4th smallest
        ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 0.95, 1.0),
        ([1.0, 1.0, 1.0, 2.0], 0.5, 1.0),  # ties: 3 of 4 dropped, the least t reaching 50%
        ([0.3, 0.1, 0.2], 0.0, 0.0),  # 0: dense
    ],
)
def test_threshold_for_is_the_least_t_whose_cdf_reaches_the_target(magnitudes, sparsity, threshold) -> None:
    assert threshold_for(torch.tensor(magnitudes), sparsity) == as_fp32(threshold)  # one of the magnitudes


def test_calibration_hits_its_target_sparsity_on_known_data() -> None:
    """Inputs -40..-1, 1..40 (distinct magnitudes 1..40, each twice): the thresholds are whole numbers and each
    target is met exactly, on a layer used inside a model (its input is what the hook sees)."""
    model = nn.Sequential(nn.Identity(), nn.Linear(80, 3))
    x = torch.cat([-torch.arange(40.0, 0, -1), torch.arange(1.0, 41)]).view(1, 80)
    for sparsity, expected in [(0.25, 10.0), (0.5, 20.0), (0.9, 36.0)]:
        (t,) = calibrate(model, {"1": model[1]}, x, sparsity).values()
        assert t == expected and (x.abs() <= t).sum().item() == round(sparsity * 80)


def test_calibration_subsamples_large_inputs_and_restores_training_mode() -> None:
    model = nn.Sequential(nn.Linear(64, 8))
    x = torch.rand(64, 64)  # 4096 magnitudes, uniform on [0, 1)
    t = calibrate(model.train(), {"0": model[0]}, x, 0.5, max_samples=1024)["0"]
    assert model.training and abs(t - 0.5) < 0.06
    with pytest.raises(ValueError, match="never ran 1"):
        calibrate(model, {"1": nn.Linear(1, 1)}, x, 0.5)


def test_sparse_gemv_linear_equals_the_masked_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the CPU path: the reference
    torch.manual_seed(0)
    linear = nn.Linear(37, 53)
    layer = SparseGemvLinear(linear, threshold=0.7, sparsity=0.5)
    assert layer.weight is linear.weight and layer.bias is linear.bias
    x = torch.randn(3, 5, 74)[..., ::2].requires_grad_()  # a prefill, non-contiguous, with autograd
    y = layer(x)
    xs = torch.where(x.detach().abs() > 0.7, x.detach(), 0).double()
    expected = xs @ linear.weight.double().t() + linear.bias.double()
    torch.testing.assert_close(y.double(), expected, atol=1e-5, rtol=1e-5)
    y.sum().backward()  # the reference is differentiable (straight through the kept entries)
    assert torch.equal(x.grad != 0, (x.abs() > 0.7) & (linear.weight.sum(0) != 0))
    torch.testing.assert_close(sparse_linear(x, linear.weight, linear.bias, 0.7), y)


def test_a_bias_that_needs_a_gradient_keeps_a_decoding_step_on_the_differentiable_reference() -> None:
    """A frozen weight with a trainable bias (bias-only fine-tuning): a one-row step must not go to the GEMV
    kernels, which have no backward, or the bias's gradient is lost."""
    torch.manual_seed(0)
    linear = nn.Linear(37, 53)
    linear.weight.requires_grad_(False)
    layer = SparseGemvLinear(linear, threshold=0.7, sparsity=0.5)
    layer(torch.randn(1, 37)).sum().backward()
    assert torch.equal(linear.bias.grad, torch.ones(53))


def _tiny_gpt2(gate: str = "none") -> GPT2:
    torch.manual_seed(0)
    return GPT2(GPT2Config(n_layer=2, n_head=2, n_embd=16, block_size=16, vocab_size=64, attn_gate=gate))


def _cfg(sparsity: int) -> Config:
    return Config({"KERNELS_SPARSE_GEMV": True, "SPARSE_GEMV_TARGET": sparsity})


def test_apply_swaps_exactly_the_block_projections_and_keeps_the_state_dict() -> None:
    model = _tiny_gpt2(gate="headwise")
    keys, params = list(model.state_dict()), dict(model.named_parameters())
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))
    taken = kernels.prepare(model, _cfg(50), "inference", torch.device("cpu"), calibration=ids)
    projections = ["attn.c_attn", "attn.c_proj", "attn.gate", "mlp.c_fc", "mlp.c_proj"]
    expected = [f"transformer.h.{i}.{p}" for i in range(2) for p in projections]
    assert sorted(taken["sparse_gemv"]) == sorted(expected)
    swapped = [name for name, m in model.named_modules() if isinstance(m, SparseGemvLinear)]
    assert sorted(swapped) == sorted(expected) and type(model.lm_head) is nn.Linear
    assert list(model.state_dict()) == keys
    assert all(p is params[name] for name, p in model.named_parameters())
    assert {m.sparsity for m in model.modules() if isinstance(m, SparseGemvLinear)} == {0.5}

    inputs = {}  # on the calibration batch, each layer drops at least half its input entries
    for name in expected:
        model.get_submodule(name).register_forward_pre_hook(lambda m, a, name=name: inputs.setdefault(name, a[0]))
    model(ids)
    for name in expected:
        dropped = (inputs[name].abs() <= model.get_submodule(name).threshold).float().mean().item()
        assert 0.5 <= dropped < 0.6, name


def test_at_sparsity_zero_the_model_is_unchanged_and_a_training_run_is_untouched() -> None:
    model = _tiny_gpt2()
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(2))
    dense = model(ids)
    assert kernels.prepare(model, _cfg(50), "train", torch.device("cpu")) == {}  # inference only
    assert not kernels.calibrating(_cfg(50), "train") and kernels.calibrating(_cfg(50), "inference")
    with pytest.raises(ValueError, match="calibrates on the model's inputs"):
        kernels.prepare(model, _cfg(0), "inference", torch.device("cpu"))
    kernels.prepare(model, _cfg(0), "inference", torch.device("cpu"), calibration=ids)
    assert {m.threshold for m in model.modules() if isinstance(m, SparseGemvLinear)} == {0.0}
    torch.testing.assert_close(model(ids), dense)


def test_the_kconfig_symbols_exist_and_reach_the_kernel() -> None:
    assert not cfgmod.from_defaults()["KERNELS_SPARSE_GEMV"]
    cfg = cfgmod.from_defaults(["KERNELS_SPARSE_GEMV=y"])
    assert cfg["SPARSE_GEMV_TARGET"] == 50
    assert SparseGemvKernel.from_config(cfg).settings.sparsity == 0.5
    assert SparseGemvKernel.from_config(cfgmod.from_defaults(["KERNELS_SPARSE_GEMV=y", "SPARSE_GEMV_TARGET=90"]))
    assert kernels.KERNELS["sparse_gemv"] is SparseGemvKernel and SparseGemvKernel.PURPOSES == ("inference",)
    with pytest.raises(UserError, match="SPARSE_GEMV_TARGET"):
        cfgmod.from_defaults(["KERNELS_SPARSE_GEMV=y", "SPARSE_GEMV_TARGET=100"])


def test_make_sample_reports_the_perplexity_cost_of_the_thresholds(tmp_path: Path, caplog, monkeypatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # sampling on the CPU: the reference path
    run = gpt2_run(tmp_path, f"DATA_DIR={tmp_path}", "KERNELS_SPARSE_GEMV=y", "SPARSE_GEMV_TARGET=70")
    with caplog.at_level(logging.INFO, logger="scripts.sample"):
        model, _ = sample.load_model(run)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "scripts.sample"]
    assert line.startswith("validation perplexity ") and "with sparse_gemv (4 layers)" in line
    assert "8 windows of 32 tokens of pydoc" in line
    assert sum(isinstance(m, SparseGemvLinear) for m in model.modules()) == 4
    assert sample.sample(run, "def ", tokens=4) == sample.sample(run, "def ", tokens=4)
