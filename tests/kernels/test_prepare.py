"""kernels.prepare: the one place a model is handed to the kernels (trainer: "train", sampling: "inference")."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kernels
from lib.config import Config
from lib.registry import Registry


class Doubler(nn.Module):
    """Takes over a Linear, keeping its Parameters; computes 2 * (x W^T + b) so the swap is visible."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * nn.functional.linear(x, self.weight, self.bias)


class DoubleLinear(kernels.Kernel):
    PURPOSES = ("inference",)

    def apply(self, model, purpose, device):
        names = [name for name, m in model.named_children() if isinstance(m, nn.Linear)]
        for name in names:
            setattr(model, name, Doubler(getattr(model, name)))
        return names


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Registry:
    fresh = Registry("kernel", "KERNELS")
    fresh.register("double_linear")(DoubleLinear)
    monkeypatch.setattr(kernels, "KERNELS", fresh)
    return fresh


def test_a_selected_kernel_takes_over_for_its_purpose_only(registry: Registry) -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    weight = model[0].weight
    x = torch.ones(1, 3)
    plain = model(x)
    cfg = Config({"KERNELS_DOUBLE_LINEAR": True})
    assert kernels.prepare(model, cfg, "train", torch.device("cpu")) == {}  # not a training kernel
    assert isinstance(model[0], nn.Linear)
    assert kernels.prepare(model, cfg, "inference", torch.device("cpu")) == {"double_linear": ["0"]}
    assert model[0].weight is weight  # the same Parameter: optimizer state and checkpoints still match
    torch.testing.assert_close(model(x), 2 * plain)


def test_an_unselected_kernel_or_one_a_recorded_run_never_knew_does_nothing(registry: Registry) -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    for cfg in (Config({"KERNELS_DOUBLE_LINEAR": False}), Config({})):  # {}: a run recorded before the kernel
        assert kernels.prepare(model, cfg, "inference", torch.device("cpu")) == {}
        assert isinstance(model[0], nn.Linear)


def test_an_unknown_purpose_is_a_programming_error(registry: Registry) -> None:
    with pytest.raises(ValueError, match="purpose 'eval': one of train, inference"):
        kernels.prepare(nn.Linear(1, 1), Config({}), "eval", torch.device("cpu"))
