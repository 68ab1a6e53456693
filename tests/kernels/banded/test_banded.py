"""The block-banded linear against autograd of masked dense, ``x (W ⊙ M)ᵀ + b``, on both CPU paths (the C
kernel and the PyTorch reference), and the kernel's take-over."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kernels.banded import CPU_PATHS, BandedKernel, BandedLinear, band_width_of
from lib.pruning.patterns import banded_mask

# dtype -> (atol, rtol) of the banded result and gradients against masked dense computed in the same dtype
TOLERANCES = {torch.float32: (1e-5, 1e-4), torch.float64: (1e-12, 1e-10)}

# (out, in, band width): FC1 and FC2 shapes, sizes that are no multiple of the tile, a band wider than a tile
# and bands so wide that no tile's window fits inside the input (every tile is moved inward at an end)
SHAPES = [
    (111, 37, 10),
    (37, 111, 10),
    (96, 24, 7),
    (24, 96, 30),
    (512, 128, 60),
    (128, 512, 60),
    (64, 16, 100),
    (16, 64, 120),
]


def _masked_linear(out_features: int, in_features: int, width: int, dtype: torch.dtype) -> nn.Linear:
    torch.manual_seed(0)
    linear = nn.Linear(in_features, out_features).to(dtype)
    linear.register_buffer("weight_mask", banded_mask(out_features, in_features, width))
    with torch.no_grad():
        linear.weight.mul_(linear.weight_mask)
    return linear


@pytest.mark.parametrize("cpu", CPU_PATHS)
@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_gradients_match_masked_dense(shape: tuple[int, int, int], dtype: torch.dtype, cpu: str) -> None:
    out_features, in_features, width = shape
    linear = _masked_linear(out_features, in_features, width, dtype)
    banded = BandedLinear(linear, block=16, cpu=cpu)
    x = torch.randn(3, 5, 2 * in_features, dtype=dtype)[..., ::2].requires_grad_()  # non-contiguous
    dy = torch.randn(3, 5, out_features, dtype=dtype)
    y = banded(x)
    y.backward(dy)
    got = (y.detach(), x.grad, linear.weight.grad, linear.bias.grad)
    x.grad = linear.weight.grad = linear.bias.grad = None
    ref = x @ (linear.weight * linear.weight_mask).T + linear.bias
    ref.backward(dy)
    expected = (ref.detach(), x.grad, linear.weight.grad * linear.weight_mask, linear.bias.grad)
    atol, rtol = TOLERANCES[dtype]
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
    assert not got[2][~linear.weight_mask].any()  # dW is exactly zero outside the band
    assert ("cpu_plan" if cpu == "c" else "plan") in banded._cache  # the path asked for ran


def test_banded_linear_keeps_the_parameters_and_state_dict_keys() -> None:
    model = nn.Sequential(_masked_linear(24, 8, 4, torch.float32))
    linear, keys = model[0], list(model.state_dict())
    model[0] = BandedLinear(linear, block=8)
    assert model[0].weight is linear.weight and model[0].bias is linear.bias
    assert model[0].weight_mask is linear.weight_mask
    assert list(model.state_dict()) == keys


def test_band_width_is_derived_from_the_mask_and_other_masks_are_refused() -> None:
    for out_features, in_features, width in SHAPES:
        mask = banded_mask(out_features, in_features, width)
        assert torch.equal(banded_mask(out_features, in_features, band_width_of(mask)), mask)
    assert band_width_of(torch.ones(8, 2, dtype=torch.bool)) is None  # dense
    odd = banded_mask(8, 2, 2)
    odd[0, 1] = True
    assert band_width_of(odd) is None


def test_the_kernel_takes_over_banded_mlp_layers_only() -> None:
    from models.gpt2.model import GPT2, GPT2Config

    model = GPT2(GPT2Config(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=64))
    fc1, fc2 = model.mlp_layers()[0]
    fc1.register_buffer("weight_mask", banded_mask(64, 16, 8))
    fc2.register_buffer("weight_mask", torch.rand(16, 64) > 0.5)  # not a band: stays dense
    assert BandedKernel().apply(model, "train", torch.device("cpu")) == ["transformer.h.0.mlp.c_fc"]
    assert isinstance(model.mlp_layers()[0][0], BandedLinear)
    assert type(model.mlp_layers()[0][1]) is nn.Linear


@pytest.mark.parametrize("cpu", CPU_PATHS)
def test_any_mask_is_exact_through_the_plan(cpu: str) -> None:
    """The plan is built from the mask: a random mask (rows with nothing kept included) is computed exactly,
    only slowly."""
    torch.manual_seed(1)
    linear = nn.Linear(40, 72).double()
    mask = torch.rand(72, 40) > 0.7
    mask[5:9] = False
    linear.register_buffer("weight_mask", mask)
    x = torch.randn(2, 7, 40, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(2, 7, 72, dtype=torch.float64)
    y = BandedLinear(linear, block=8, cpu=cpu)(x)
    y.backward(dy)
    got = (y.detach(), x.grad, linear.weight.grad, linear.bias.grad)
    x.grad = linear.weight.grad = linear.bias.grad = None
    ref = x @ (linear.weight * mask).T + linear.bias
    ref.backward(dy)
    for a, b in zip(got, (ref.detach(), x.grad, linear.weight.grad * mask, linear.bias.grad), strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_auto_block_is_the_power_of_two_nearest_a_quarter_band_within_16_to_128() -> None:
    from kernels.banded import auto_block

    assert [auto_block(w) for w in (252, 130, 62, 524, 1030, 2, 40)] == [64, 32, 16, 128, 128, 16, 16]
