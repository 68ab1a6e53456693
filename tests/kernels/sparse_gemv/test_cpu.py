"""The sparse GEMV's C kernel (kernels/sparse_gemv/cpu.c) against the fp64 reference ``sparsify(x, t) Wᵀ + b``:
odd shapes, batch 1-4, strided inputs, thresholds from dense to everything dropped; SparseGemvLinear's choice of
it on the CPU, and its fallback where it cannot be built."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from kernels.sparse_gemv import cpu
from kernels.sparse_gemv.reference import SparseGemvLinear, as_fp32, sparse_linear, sparsify

pytestmark = pytest.mark.skipif(cpu.unavailable() is not None, reason="no C compiler (cc, gcc or $CC) here")

SHAPES = [(37, 53), (64, 17), (300, 129)]  # (K, N): no multiple of a vector; N smaller than one per thread
THRESHOLDS = [0.0, 0.7, 2.5, 50.0]  # dense, about half dropped, about 99% dropped, everything dropped
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.fixture(autouse=True)
def no_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Triton's interpreter (this directory's conftest turns it on), CPU tensors go to the C kernel."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def _operands(k: int, n: int, batch: int, dtype: torch.dtype, bias: bool = True):
    gen = torch.Generator().manual_seed(k * 1000 + n * 10 + batch)
    x = torch.randn(batch, 2 * k, generator=gen, dtype=dtype)[:, ::2]  # strided along K
    w = torch.randn(n, k, generator=gen, dtype=dtype) / k**0.5
    b = torch.randn(n, generator=gen, dtype=dtype) if bias else None
    return x, w, b


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("batch", [1, 2, 3, 4])
@pytest.mark.parametrize("threshold", THRESHOLDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_the_reference(shape, batch: int, threshold: float, dtype: torch.dtype) -> None:
    k, n = shape
    x, w, b = _operands(k, n, batch, dtype, bias=batch != 3)
    t = as_fp32(threshold)
    y, kept = cpu.cpu_sparse_gemv(x, w.t().contiguous(), b, t)
    expected = sparse_linear(x.double(), w.double(), None if b is None else b.double(), t)
    assert y.dtype == dtype and y.shape == (batch, n)
    torch.testing.assert_close(y.double(), expected, atol=TOLERANCE[dtype], rtol=TOLERANCE[dtype])
    assert kept == int((sparsify(x, t) != 0).any(0).sum())  # the channels some row keeps: the rows read
    if threshold == 50.0:
        assert kept == 0 and torch.equal(y, b.expand_as(y) if b is not None else torch.zeros_like(y))


def test_a_channel_dropped_by_one_row_is_zero_for_that_row_only() -> None:
    """Row 0 keeps channel 0, row 1 drops it (|x| <= t): row 1 must not use its value."""
    x = torch.tensor([[2.0, 0.1], [0.3, 3.0]])
    w = torch.tensor([[1.0, 10.0]])  # (N=1, K=2)
    y, kept = cpu.cpu_sparse_gemv(x, w.t().contiguous(), None, 0.5)
    assert kept == 2 and y.tolist() == [[2.0], [30.0]]


def test_the_layer_takes_the_kernel_for_decoding_on_the_cpu() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(48, 40)
    layer = SparseGemvLinear(linear, threshold=0.6, sparsity=0.5)
    x = torch.randn(2, 3, 48)  # batch dims: 6 rows, a prefill: the reference
    with torch.no_grad():
        torch.testing.assert_close(layer(x), sparse_linear(x, linear.weight, linear.bias, layer.threshold))
        assert layer.kept is None
        step = torch.randn(1, 1, 48)  # one decoding step
        y = layer(step)
    assert layer.kept is not None and 0 < layer.kept < 48
    torch.testing.assert_close(y, sparse_linear(step, linear.weight, linear.bias, layer.threshold))
    layer.kept = None
    layer(step)  # with autograd recording (the weight requires grad): the reference
    assert layer.kept is None


def test_without_a_compiler_the_layer_runs_the_reference_and_says_why_once(
    without_c_compiler, caplog: pytest.LogCaptureFixture
) -> None:
    assert "CC=no-such-compiler is not on PATH" in cpu.unavailable()
    linear = nn.Linear(16, 8)
    layer = SparseGemvLinear(linear, threshold=0.5, sparsity=0.5)
    x = torch.randn(1, 16)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="kernels.sparse_gemv"):
        y = layer(x)
        layer(x)
    torch.testing.assert_close(y, sparse_linear(x, linear.weight, linear.bias, layer.threshold))
    warnings = [r.getMessage() for r in caplog.records if "compiled CPU kernel cannot run" in r.getMessage()]
    assert len(warnings) == 1 and "no-such-compiler" in warnings[0]
