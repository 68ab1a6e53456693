"""The Triton sparse GEMV (compiled on CUDA, else under ``TRITON_INTERPRET=1``: see conftest.py) against the fp64
reference ``sparsify(x, t) Wᵀ + b``: odd shapes, batch 1-4, non-contiguous inputs, thresholds 0 (dense) to high."""

from __future__ import annotations

import importlib

import pytest
import torch

from kernels.runtime import triton_installed
from kernels.sparse_gemv.reference import SparseGemvLinear, sparse_linear
from tests.kernels.sparse_gemv.conftest import DEVICE

pytestmark = pytest.mark.skipif(not triton_installed(), reason="Triton is not installed (Linux x86-64 only)")

# dtype -> (atol, rtol) against the fp64 reference of the same (rounded) inputs; outputs are O(1): one rounding
# of the result to the dtype (fp16: 2^-11, bf16: 2^-8 relative) plus fp32 accumulation over K
TOLERANCES = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}
SHAPES = [(37, 53), (64, 17)]  # (K, N): no multiple of the tiles, and K a multiple with N smaller than a tile
THRESHOLDS = [0.0, 0.7, 2.5]  # dense (only exact zeros dropped), about half dropped, about 99% dropped


@pytest.fixture
def kernel():
    return importlib.import_module("kernels.sparse_gemv.kernel")  # after conftest.py turned the interpreter on


def _operands(k: int, n: int, batch: int, dtype: torch.dtype, bias: bool = True):
    gen = torch.Generator().manual_seed(k * 1000 + n * 10 + batch)
    x = torch.randn(batch, 2 * k, generator=gen).to(DEVICE, dtype)[:, ::2]  # non-contiguous: stride 2 along K
    w = (torch.randn(n, k, generator=gen) / k**0.5).to(DEVICE, dtype)
    b = torch.randn(n, generator=gen).to(DEVICE, dtype) if bias else None
    return x, w, b


def _oracle(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, t: float) -> torch.Tensor:
    return sparse_linear(x.double(), w.double(), None if b is None else b.double(), t)


@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("batch", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_matches_the_fp64_reference(kernel, shape, batch: int, dtype: torch.dtype) -> None:
    k, n = shape
    x, w, b = _operands(k, n, batch, dtype, bias=batch != 2)  # batch 2 without bias
    assert not x.is_contiguous()
    atol, rtol = TOLERANCES[dtype]
    for t in THRESHOLDS:
        y = kernel.sparse_gemv(x, w.t().contiguous(), b, t, sparsity=0.5)
        assert y.dtype == dtype and y.shape == (batch, n)
        torch.testing.assert_close(y.double(), _oracle(x, w, b, t), atol=atol, rtol=rtol, msg=f"threshold {t}")


def test_a_threshold_above_every_activation_leaves_the_bias(kernel) -> None:
    x, w, b = _operands(37, 53, 3, torch.float32)
    y = kernel.sparse_gemv(x, w.t().contiguous(), b, float(x.abs().max()), sparsity=0.99)
    assert torch.equal(y, b.expand(3, -1))
    assert not kernel.sparse_gemv(x, w.t().contiguous(), None, float(x.abs().max())).any()


def test_the_weight_rows_of_dropped_channels_are_never_read(kernel) -> None:
    """Rows of Wᵀ whose channel no row of the batch keeps are NaN: were they loaded, 0 · NaN would spread."""
    x, w, b = _operands(37, 53, 2, torch.float16)
    x[:, 3::4] = 0.01  # below the threshold in both rows
    wt = w.t().contiguous()
    dropped = (x.abs() <= 0.05).all(0)
    wt[dropped] = float("nan")
    y = kernel.sparse_gemv(x, wt, b, 0.05)
    expected = _oracle(x, wt.masked_fill(dropped[:, None], 0).t(), b, 0.05)
    assert dropped.sum() >= 9 and y.isfinite().all()
    torch.testing.assert_close(y.double(), expected, atol=2e-3, rtol=2e-3)


def test_the_threshold_drops_entries_at_or_below_it(kernel) -> None:
    """|x| == t is dropped, the next value up is kept: the kernel's rule is the reference's."""
    x = torch.tensor([[0.5, -0.5, 0.5000001, -2.0]], device=DEVICE)
    w = torch.tensor([[1.0, 10.0, 100.0, 1000.0]], device=DEVICE)
    y = kernel.sparse_gemv(x, w.t().contiguous(), None, 0.5)
    assert y.item() == pytest.approx(100 * 0.5000001 - 2000.0) and y.item() == sparse_linear(x, w, None, 0.5).item()


def test_each_call_leaves_the_splits_workspace_zeroed_for_the_next(kernel) -> None:
    """The splits add into a workspace that no kernel zeroes: the last split of each column block reads it and
    writes it back to zero, with its counter, so calls of other batches, thresholds and bias on it stay exact."""
    x, w, b = _operands(37, 53, 4, torch.float32)
    wt = w.t().contiguous()
    space = kernel.Workspace.zeros(x.device, 53)
    for rows, t, bias in [(4, 0.0, b), (1, 0.7, None), (3, 2.5, b), (4, 0.7, b)]:
        y = kernel.sparse_gemv(x[:rows], wt, bias, t, workspace=space)
        torch.testing.assert_close(y.double(), _oracle(x[:rows], w, bias, t), atol=1e-5, rtol=1e-5)
        assert not space.sums.any() and not space.count.any()
    with pytest.raises(ValueError, match=r"workspace for \(4, 52\)"):
        kernel.sparse_gemv(x, wt, b, 0.1, workspace=kernel.Workspace.zeros(x.device, 52))


def test_the_launcher_checks_its_constraints(kernel) -> None:
    x, w, b = _operands(8, 8, 4, torch.float32)
    wt = w.t().contiguous()
    for bad, match in [
        ((torch.ones(5, 8, device=DEVICE), wt, b), "1 <= B <= 4"),
        ((x, w.t(), b), "contiguous"),
        ((x, wt.half(), b), "dtypes"),
        ((x.double(), wt.double(), b.double()), "dtypes"),
        ((x, wt, torch.ones(7, device=DEVICE)), "bias of shape"),
    ]:
        with pytest.raises(ValueError, match=match):
            kernel.sparse_gemv(*bad, 0.1)


def test_the_sparsity_bin_is_a_host_constant_per_layer(kernel) -> None:
    assert [kernel.sparsity_bin(s) for s in (0.0, 0.29, 0.3, 0.5, 0.6, 0.79, 0.8, 0.99)] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_sparse_gemv_linear_decodes_with_the_kernel_and_prefills_with_the_reference(kernel, monkeypatch) -> None:
    linear = torch.nn.Linear(37, 53, device=DEVICE)
    layer = SparseGemvLinear(linear, threshold=0.6, sparsity=0.5)
    calls = []
    launch = kernel.sparse_gemv
    monkeypatch.setattr(kernel, "sparse_gemv", lambda *a, **kw: calls.append((a[0].shape, a[5])) or launch(*a, **kw))
    with torch.no_grad():
        for shape in ((1, 1, 37), (2, 2, 37), (5, 37)):  # 1 and 4 rows; 5: prefill
            x = torch.randn(shape, device=DEVICE)
            expected = _oracle(x, linear.weight, linear.bias, 0.6)
            torch.testing.assert_close(layer(x).double(), expected, atol=1e-5, rtol=1e-5)
    assert [shape for shape, _ in calls] == [(1, 37), (4, 37)]
    assert calls[0][1] is calls[1][1] and calls[0][1].sums.shape == (4, 53)  # the layer's workspace, kept
    first = layer.weight_t()
    assert first.shape == (37, 53) and first.is_contiguous() and layer.weight_t() is first  # made once
    with torch.no_grad():
        linear.weight.mul_(2)  # changed in place: the copy is made again
    assert torch.equal(layer.weight_t(), linear.weight.t())
