"""The 2:4 semi-structured kernel: converts 2:4 Linears on a GPU of compute capability >= 8.0 for inference, and
elsewhere leaves the model dense and exact with one warning line saying why."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

import kernels
from kernels.semi_structured import SemiStructuredKernel, SemiStructuredLinear
from lib import config as cfgmod
from lib.config import Config
from lib.errors import UserError
from lib.pruning.patterns import nm_mask
from scripts import sample
from tests.helpers import gpt2_run

CPU = torch.device("cpu")
SM80 = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8
NEEDS_SM80 = pytest.mark.skipif(
    not SM80, reason="2:4 sparse tensor cores need a CUDA GPU with compute capability >= 8.0"
)
SELECTED = Config({"KERNELS_SEMI_STRUCTURED": True, "PRECISION": "fp32"})


def _pruned_2_4(*linears: nn.Linear) -> None:
    with torch.no_grad():
        for linear in linears:
            linear.weight.mul_(nm_mask(linear.weight.abs(), 2, 4))


def _mlp(device: torch.device = CPU) -> nn.Sequential:
    """Two 2:4-pruned Linears around a dense head; shapes torch's 2:4 kernels take (multiples of 64)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128), nn.GELU(), nn.Linear(128, 64))
    _pruned_2_4(model[0], model[2])
    return model.to(device)


def test_on_cpu_one_warning_says_why_and_the_model_stays_dense_and_exact(caplog: pytest.LogCaptureFixture) -> None:
    model = _mlp()
    x = torch.randn(5, 128)
    before, modules = model(x), list(model)
    with caplog.at_level(logging.INFO, logger="kernels"):
        assert kernels.prepare(model, SELECTED, "inference", CPU) == {"semi_structured": []}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "2:4 semi-structured Linears need a CUDA GPU with compute capability >= 8.0 (this run is on cpu); 2 Linears "
        "with a 2:4 pattern left dense (same outputs, no speedup): run on an Ampere or newer GPU to use them, or set "
        "KERNELS_SEMI_STRUCTURED=n"
    ]
    assert list(model) == modules
    assert torch.equal(model(x), before)


def test_a_model_without_a_2_4_pattern_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))
    with torch.no_grad():
        model[0].weight[:, :3] = 1.0  # 3 nonzeros in a group of 4
    modules = list(model)
    with caplog.at_level(logging.INFO, logger="kernels"):
        assert SemiStructuredKernel().apply(model, "inference", CPU) == []
    assert list(model) == modules
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "no Linear holds a 2:4 pattern; model left dense" in caplog.text


def test_layers_torch_refuses_are_named_in_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Past the device check (faked here), each layer to_semi_structured refuses is named with its reason, all in
    one line; here the weights were left on the CPU."""
    monkeypatch.setattr("kernels.semi_structured.semi_structured_unsupported", lambda device: None)
    model = _mlp()
    with caplog.at_level(logging.WARNING, logger="kernels"):
        assert SemiStructuredKernel().apply(model, "inference", torch.device("cuda")) == []
    (record,) = caplog.records
    assert record.getMessage() == (
        "semi_structured kernel: 2 of 2 Linears with a 2:4 pattern left dense: 0, 2: 2:4 semi-structured weights "
        "live on a CUDA GPU; this one is on cpu: move the layer first"
    )
    assert all(type(m) is not SemiStructuredLinear for m in model)


def test_the_symbol_needs_the_2_4_pattern_and_training_never_uses_the_kernel() -> None:
    cfg = cfgmod.from_defaults(["PRUNING_NM=y", "KERNELS_SEMI_STRUCTURED=y"])  # 2:4 is the pattern's default
    assert cfg["KERNELS_SEMI_STRUCTURED"] and cfg["PRUNING_NM_PATTERN"] == "2_4"
    with pytest.raises(UserError, match="KERNELS_SEMI_STRUCTURED"):  # 4:8 cannot use 2:4 sparse tensor cores
        cfgmod.from_defaults(["PRUNING_NM=y", "PRUNING_NM_PATTERN_4_8=y", "KERNELS_SEMI_STRUCTURED=y"])
    model = _mlp()
    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    assert kernels.prepare(model, cfg, "train", CPU) == {}
    assert [m.weight for m in model if isinstance(m, nn.Linear)] == weights


def test_precision_follows_the_run() -> None:
    assert SemiStructuredKernel.from_config(Config({"PRECISION": "bf16"})).settings.dtype is torch.bfloat16
    assert SemiStructuredKernel.from_config(Config({"PRECISION": "fp32"})).settings.dtype is torch.float16


def test_sampling_an_nm_run_on_cpu_is_unchanged_by_the_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """scripts/sample.py's load_model: the masks squashed into the weights, then kernels.prepare("inference")."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # sampling picks CUDA where there is one

    def pruned(state: dict) -> None:
        for name in ("attn.c_attn", "mlp.c_fc", "mlp.c_proj"):  # as the N:M pruner leaves them: masked values kept
            key = f"transformer.h.0.{name}.weight"
            state[f"{key}_mask"] = nm_mask(state[key].abs(), 2, 4)

    runs = {
        kernel: gpt2_run(tmp_path / kernel, "PRUNING_NM=y", f"KERNELS_SEMI_STRUCTURED={kernel}", edit=pruned)
        for kernel in ("n", "y")
    }
    idx = torch.tensor([[5, 7, 11, 13]])
    dense, _ = sample.load_model(runs["n"])
    with caplog.at_level(logging.WARNING, logger="kernels"):
        model, _ = sample.load_model(runs["y"])
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [
        "2:4 semi-structured Linears need a CUDA GPU with compute capability >= 8.0 (this run is on cpu)"
    ]
    assert "3 Linears with a 2:4 pattern left dense" in caplog.text
    assert torch.equal(model(idx), dense(idx))


@NEEDS_SM80
@pytest.mark.parametrize("tokens", [1, 37])
def test_a_converted_linear_matches_dense_within_fp16_tolerance(tokens: int) -> None:
    model = _mlp(torch.device("cuda"))
    x = torch.randn(3, tokens, 128, device="cuda")
    with torch.no_grad():
        expected = model.half()(x.half()).float()  # dense fp16 math, the same rounding of the weights
    model.float()
    assert kernels.prepare(model, SELECTED, "inference", torch.device("cuda")) == {"semi_structured": ["0", "2"]}
    assert type(model[0]) is SemiStructuredLinear and type(model[4]) is nn.Linear
    assert isinstance(model[0].weight.data, torch.sparse.SparseSemiStructuredTensor)
    with torch.no_grad():
        got = model(x)
    assert got.dtype is torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2)
