"""The compiled CPU kernel (kernels/banded/cpu.c): its tiling by hand, its transpose, every layout of its operands
against masked dense, gradcheck, the build cache, and the fallback where it cannot be built."""

from __future__ import annotations

import ctypes
import logging
import shutil
import subprocess

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from kernels.banded import BandedLinear, cpu
from lib.pruning.patterns import banded_mask

# Skipped only where there is no C compiler: where there is one, a kernel that does not build fails here.
pytestmark = pytest.mark.skipif(cpu.compiler() is None, reason="no C compiler (cc, gcc or $CC) here")


def test_the_kernel_builds_and_loads() -> None:
    assert cpu.unavailable() is None


def test_tiling_by_hand() -> None:
    """Tiles of 8 rows on the wide side; each reads the hull of its rows' kept columns; an empty tile reads
    nothing. Tiles of 4 rows on the narrow side."""
    mask = torch.zeros(20, 9, dtype=torch.bool)
    mask[0, 2] = mask[3, 5] = mask[7, 3] = True  # tile 0: columns 2..5
    mask[17, 8] = mask[19, 0] = True  # tile 2 (rows 16-19): columns 0..8; tile 1 keeps nothing
    t = cpu.tiling(mask)
    assert t.rows == 8
    assert t.row0.tolist() == [0, 8, 16]
    assert t.nrows.tolist() == [8, 8, 4]
    assert t.col0.tolist() == [2, 0, 0]
    assert t.width.tolist() == [4, 0, 9]
    assert t.offset.tolist() == [0, 32, 32] and t.panel == (4 + 9) * 8
    assert t.density == (8 * 4 + 4 * 9) / (20 * 9)
    # dW's split blocks: each half's first kept column and the wider half's span (tile 0: rows 0-3 from column
    # 2, 4 wide, rows 4-7 from 3, 1 wide; tile 2: rows 16-19 from 0, 9 wide; empty halves from 0)
    assert [a.tolist() for a in t.split] == [[2, 0, 0], [3, 0, 0], [4, 0, 9]]
    t = cpu.tiling(mask.t())  # (9, 20): rows 0-3, 4-7, 8
    assert t.rows == 4
    assert t.row0.tolist() == [0, 4, 8] and t.nrows.tolist() == [4, 4, 1]
    # columns 0-3 keep rows 19, 0 and 7; columns 4-7 row 3 only; column 8 row 17
    assert t.col0.tolist() == [0, 3, 17] and t.width.tolist() == [20, 1, 1]
    assert t.offset.tolist() == [0, 80, 84]
    assert t.split[2].tolist() == [cpu.NO_SPLIT] * 3  # 4-row tiles are never split
    with pytest.raises(ValueError, match="6 rows per tile; one of"):
        cpu.tiling(mask, 6)


@pytest.mark.parametrize("rows", cpu.ROWS)
def test_pack_is_the_masked_tile_column_by_column(rows: int) -> None:
    mask = banded_mask(12, 3, 4)
    w = torch.arange(36.0).view(12, 3)
    t = cpu.tiling(mask, rows)
    panel = cpu.pack(w, mask, t)
    for k in range(len(t.row0)):
        r0, n, c0, width, off = (int(a[k]) for a in (t.row0, t.nrows, t.col0, t.width, t.offset))
        block = panel[off : off + width * t.rows].view(width, t.rows)  # (width, rows): column k's rows adjacent
        expected = torch.zeros(width, t.rows)
        expected[:, :n] = (w * mask)[r0 : r0 + n, c0 : c0 + width].t()
        assert torch.equal(block, expected)


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (64, 64), (100, 37), (4096, 130), (131, 1030), (300, 70)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transposed_equals_torch(shape: tuple[int, int], dtype: torch.dtype) -> None:
    a = torch.randn(shape[0], shape[1] + 5, dtype=dtype)[:, 2 : 2 + shape[1]]  # rows further apart than cols
    assert torch.equal(cpu.transposed(a), a.t())
    assert torch.equal(cpu.transposed(a.t()), a)  # a column-major input is copied to row-major first


@pytest.mark.parametrize("out_rows", [False, True])
@pytest.mark.parametrize("b_layout", ["tokens_last", "row_major", "row_major_padded"])
@pytest.mark.parametrize("side", ["fwd", "bwd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_product_in_chunks_reads_and_writes_either_layout(dtype, side: str, b_layout: str, out_rows: bool) -> None:
    """A row-major operand or result is transposed chunk by chunk inside the kernel: 300 tokens in chunks of 64
    (four whole chunks and one of 44, no multiple of a strip) give masked dense's product in every layout."""
    torch.manual_seed(0)
    mask = banded_mask(96, 24, 7)
    weight, bias = torch.randn(96, 24, dtype=dtype), torch.randn(96, dtype=dtype)
    p = cpu.plan(mask)
    t, a, m, bias = (p.fwd, weight, mask, bias) if side == "fwd" else (p.bwd, weight.t(), mask.t(), None)
    b = torch.randn(300, a.shape[1] + 6, dtype=dtype)[:, 3 : 3 + a.shape[1]]  # rows further apart than columns
    if b_layout != "row_major_padded":
        b = b.contiguous() if b_layout == "row_major" else _tokens_last(b)
    got = cpu.product(t, cpu.pack(a, m, t), b, bias, out_rows, chunk=64)
    assert got.is_contiguous() == out_rows and cpu.is_tokens_last(got) != out_rows
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-12, "rtol": 1e-12}
    torch.testing.assert_close(got, F.linear(b, a * m, bias), **tol)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("tokens", [1, 3, 4, 7, 15])
@pytest.mark.parametrize("out_rows", [False, True])
@pytest.mark.parametrize("b_layout", ["tokens_last", "row_major_padded"])
@pytest.mark.parametrize("side", ["fwd", "bwd"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_product_of_fewer_tokens_than_a_strip(dtype, side: str, b_layout: str, out_rows: bool, tokens: int,
                                                threads: int) -> None:  # fmt: skip
    """Fewer tokens than an 8-row strip (decoding: 1-4) take cpu.c's product_few: the threads share the tiles
    (3 threads: uneven shares), tokens go four at a time, the rest one at a time with each sum split four ways
    over the columns (a staircase of rows 1-7 columns wide: hulls of 2-8 columns on 8-row tiles (fwd), every
    remainder mod 4, and of 16-39 on 4-row tiles (bwd)), each layout in and out, against masked dense."""
    torch.manual_seed(0)
    mask = torch.zeros(96, 24, dtype=torch.bool)
    for r in range(96):
        mask[r, r // 4 : r // 4 + 1 + r % 13 // 2] = True
    weight, bias = torch.randn(96, 24, dtype=dtype), torch.randn(96, dtype=dtype)
    p = cpu.plan(mask)
    t, a, m, bias = (p.fwd, weight, mask, bias) if side == "fwd" else (p.bwd, weight.t(), mask.t(), None)
    assert len({int(w) % 4 for w in t.width}) >= 3
    b = torch.randn(tokens, a.shape[1] + 6, dtype=dtype)[:, 3 : 3 + a.shape[1]]
    if b_layout == "tokens_last":
        b = _tokens_last(b)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = cpu.product(t, cpu.pack(a, m, t), b, bias, out_rows)
    finally:
        torch.set_num_threads(previous)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-12, "rtol": 1e-12}
    torch.testing.assert_close(got, F.linear(b, a * m, bias), **tol)


@pytest.mark.parametrize("shape", [(512, 128, 62), (128, 512, 62), (260, 65, 60)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dw_split_blocks_on_a_narrow_band(shape: tuple[int, int, int], dtype: torch.dtype) -> None:
    """A band about 15 channels wide: an 8-row tile's hull is 17 columns (three 8-lane vectors), each half's
    16 (two), so dW runs split blocks (260 rows: the last tile has 4); dW equals masked dense's, zero off the band."""
    out_features, in_features, width = shape
    mask, weight, bias, x, dy = _case(out_features, in_features, width, 37, dtype)
    p = cpu.plan(mask)
    t = p.fwd if out_features >= in_features else p.bwd  # the tiles over the wide side, 8 rows each
    assert t.rows == 8 and ((t.split[2] <= 16) & (t.width > 16)).float().mean() > 0.5
    x, w = x.requires_grad_(), weight.clone().requires_grad_()
    cpu.cpu_banded_linear(x if out_features >= in_features else _tokens_last(x), w, bias, p).backward(dy)
    tol = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-11, "rtol": 1e-10}
    torch.testing.assert_close(w.grad, (dy.t() @ x.detach()) * mask, **tol)
    assert not w.grad[~mask].any()


def _case(out_features: int, in_features: int, width: int, tokens: int, dtype: torch.dtype):
    torch.manual_seed(0)
    mask = banded_mask(out_features, in_features, width)
    weight = torch.randn(out_features, in_features, dtype=dtype)
    bias = torch.randn(out_features, dtype=dtype)
    x = torch.randn(tokens, in_features, dtype=dtype)
    dy = torch.randn(tokens, out_features, dtype=dtype)
    return mask, weight, bias, x, dy


def _tokens_last(a: torch.Tensor) -> torch.Tensor:
    return a.t().contiguous().t()


# (out, in, band width, tokens): FC1 and FC2, tokens no multiple of a vector, bands wider than one dW block
# (32 columns), a matrix narrower than a dW block's half vector (element-by-element path)
CASES = [(96, 24, 7, 37), (24, 96, 7, 101), (512, 128, 60, 64), (128, 512, 60, 50), (20, 5, 3, 9), (5, 20, 3, 33)]


@pytest.mark.parametrize("dy_tokens_last", [False, True])
@pytest.mark.parametrize("x_tokens_last", [False, True])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_layout_matches_masked_dense(case, dtype, x_tokens_last: bool, dy_tokens_last: bool) -> None:
    """y comes back in the layout x did not have, dx in the one it had; values, dW (zero off the mask) and db
    equal masked dense's."""
    _check_layer(case, dtype, x_tokens_last, dy_tokens_last)


def _has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return {"avx2", "fma"} <= set(flags)


@pytest.fixture(scope="module")
def avx2_library(tmp_path_factory):
    """The kernel built for AVX2 (16 vector registers: cpu.c's narrower blocking) instead of this machine."""
    if not _has_avx2():
        pytest.skip("the AVX2 build runs on an x86 CPU with AVX2 and FMA; this one has none")
    path = tmp_path_factory.mktemp("avx2") / "banded-avx2.so"
    cpu.build(cpu.compiler(), path, tuple("-march=haswell" if f == "-march=native" else f for f in cpu.FLAGS))
    return cpu.bind(path)


@pytest.mark.parametrize("case", [*CASES, (512, 128, 62, 77), (128, 512, 62, 45)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_avx2_build_matches_masked_dense(avx2_library, monkeypatch, case, dtype) -> None:
    """The blocking for 16 vector registers (AVX2; products 8 x 1 and 4 x 2 vectors, dW in groups of 4 rows, no
    split blocks) computes what the wide one does: every layer in both layouts its MLP gives it."""
    monkeypatch.setattr(cpu, "_load", lambda: (avx2_library, None))
    out_features, in_features = case[:2]
    fc1 = out_features >= in_features
    _check_layer(case, dtype, x_tokens_last=not fc1, dy_tokens_last=fc1)
    _check_layer(case, dtype, x_tokens_last=fc1, dy_tokens_last=fc1)


def _check_layer(case, dtype, x_tokens_last: bool, dy_tokens_last: bool) -> None:
    mask, weight, bias, x, dy = _case(*case, dtype)
    x = (_tokens_last(x) if x_tokens_last else x).requires_grad_()
    w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    y = cpu.cpu_banded_linear(x, w, b, cpu.plan(mask))
    assert cpu.is_tokens_last(y) != x_tokens_last and y.is_contiguous() == x_tokens_last
    y.backward(_tokens_last(dy) if dy_tokens_last else dy)
    assert cpu.is_tokens_last(x.grad) == x_tokens_last
    got = (y.detach(), x.grad, w.grad, b.grad)
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    ref = F.linear(leaves[0], leaves[1] * mask, leaves[2])
    ref.backward(dy)
    expected = (ref.detach(), leaves[0].grad, leaves[1].grad * mask, leaves[2].grad)
    tol = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-11, "rtol": 1e-10}
    for a, e in zip(got, expected, strict=True):
        torch.testing.assert_close(a, e, **tol)
    assert not w.grad[~mask].any()


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("mask_kind", ["band", "random"])
def test_the_one_pass_backward_over_several_chunks_and_threads(threads: int, mask_kind: str) -> None:
    """x row-major and dy tokens last (FC1 in GPT-2's MLP) take the backward in one pass over dy, each thread
    on its own rows of dW, db and columns of dx: 1100 tokens are two whole passes of 512 and one of 76, and
    dW, db and dx accumulate across them; with 3 threads the rows split unevenly; a random mask (rows with
    nothing kept included) has dX tiles whose bands are not in order. All equal masked dense's."""
    torch.manual_seed(1)
    mask = banded_mask(96, 24, 9) if mask_kind == "band" else torch.rand(96, 24) < 0.2
    mask[5] = False
    weight, bias = torch.randn(96, 24, dtype=torch.float64), torch.randn(96, dtype=torch.float64)
    x = torch.randn(1100, 24, dtype=torch.float64, requires_grad=True)
    dy = _tokens_last(torch.randn(1100, 96, dtype=torch.float64))
    w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cpu.cpu_banded_linear(x, w, b, cpu.plan(mask)).backward(dy)
    finally:
        torch.set_num_threads(before)
    got = (x.grad, w.grad, b.grad)
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    F.linear(leaves[0], leaves[1] * mask, leaves[2]).backward(dy)
    expected = (leaves[0].grad, leaves[1].grad * mask, leaves[2].grad)
    for a, e in zip(got, expected, strict=True):
        torch.testing.assert_close(a, e, atol=1e-11, rtol=1e-10)
    assert not w.grad[~mask].any()


def test_packed_weights_are_kept_until_the_weight_changes() -> None:
    """Inference packs the weights once; a weight written in place (as an optimizer step writes it) or another
    weight tensor is packed again, so outputs follow the weights; with autograd every call packs (and the kept
    panel is dropped), and three SGD steps on the banded layer land where three on masked dense land."""
    mask, weight, bias, x, dy = _case(96, 24, 7, 5, torch.float32)
    p = cpu.plan(mask)
    w = weight.clone()
    with torch.no_grad():
        cpu.cpu_banded_linear(x, w, bias, p)
        first = p.kept_panel(w)
        cpu.cpu_banded_linear(x, w, bias, p)
        assert p.kept_panel(w) is first
        w.mul_(2)
        torch.testing.assert_close(cpu.cpu_banded_linear(x, w, bias, p), F.linear(x, w * mask, bias))
        assert p.kept_panel(w) is not first
        w3 = weight * 3  # another tensor
        torch.testing.assert_close(cpu.cpu_banded_linear(x, w3, bias, p), F.linear(x, w3 * mask, bias))
    # packed on every call with autograd: a write through .data (no new version) is seen, unlike at inference
    w4 = w3.clone().requires_grad_()
    cpu.cpu_banded_linear(x, w4, bias, p)
    assert not p.kept  # inference's kept panel is not held through training
    w4.data.mul_(2)
    torch.testing.assert_close(cpu.cpu_banded_linear(x, w4, bias, p), F.linear(x, w4.detach() * mask, bias))
    runs = []
    for banded in (True, False):
        w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
        opt = torch.optim.SGD([w, b], lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            y = cpu.cpu_banded_linear(x, w, b, p) if banded else F.linear(x, w * mask, b)
            y.backward(dy)
            if not banded:
                w.grad.mul_(mask)
            opt.step()
        x_leaf = x.clone().requires_grad_()
        (cpu.cpu_banded_linear(x_leaf, w, b, p) if banded else F.linear(x_leaf, w * mask, b)).backward(dy)
        runs.append((w.detach(), b.detach(), x_leaf.grad))
    for got, expected in zip(*runs, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_inference_takes_any_leading_dims_and_layout_and_reads_each_call_s_input() -> None:
    """Inference keeps its arguments per input shape and strides: one token of a (1, 1, in) decoding step, rows,
    tokens last (2-D and 3-D), and a strided input it copies; each call reads that call's input (written in
    place between calls: no stale pointer or copy), and tokens come out in the layout the input does not have."""
    mask, weight, bias, x, _ = _case(24, 96, 7, 6, torch.float32)
    p = cpu.plan(mask)
    wide = torch.randn(2, 3, 192)
    inputs = {
        "one token": x[:1].reshape(1, 1, 96).clone(),
        "rows": x.clone(),
        "tokens last": _tokens_last(x),
        "tokens last, 3-D": _tokens_last(x).view(2, 3, 96),
        "strided (copied)": wide[:, :, ::2],
    }
    with torch.no_grad():
        for name, a in [*inputs.items(), *inputs.items()]:  # twice: the second time on the kept arguments
            for _ in range(2):
                y = cpu.cpu_banded_linear(a, weight, bias, p)
                assert y.shape == (*a.shape[:-1], 24), name
                torch.testing.assert_close(y, F.linear(a, weight * mask, bias), atol=1e-5, rtol=1e-5, msg=name)
                if name in ("rows", "tokens last", "tokens last, 3-D"):  # the layout the input does not have
                    assert (y.reshape(-1, 24).t() if name == "rows" else y).is_contiguous(), name
                kept = p.kept["args"]
                a.mul_(-0.5)  # in place: the next call must read the new values
            assert p.kept["args"] is kept, name  # the same input layout: the arguments were reused


@pytest.mark.parametrize("x_tokens_last", [False, True])
def test_no_tokens(x_tokens_last: bool) -> None:
    """An input of no tokens gives an empty output and zero gradients (it once divided by a chunk of 0)."""
    mask, weight, bias, x, dy = _case(96, 24, 7, 0, torch.float32)
    x = (_tokens_last(x) if x_tokens_last else x).requires_grad_()
    w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    y = cpu.cpu_banded_linear(x, w, b, cpu.plan(mask))
    assert y.shape == (0, 96)
    y.backward(dy)
    assert x.grad.shape == (0, 24) and not w.grad.any() and not b.grad.any()


def test_gradcheck_in_float64() -> None:
    mask, weight, bias, x, _ = _case(40, 10, 5, 11, torch.float64)
    p = cpu.plan(mask)
    inputs = tuple(t.requires_grad_() for t in (x, weight, bias))
    assert torch.autograd.gradcheck(lambda x, w, b: cpu.cpu_banded_linear(x, w, b, p), inputs)


def test_a_banded_mlp_hands_each_layer_the_layout_it_reads() -> None:
    """FC1 -> GELU -> FC2 as in GPT-2: FC1's y is tokens last (what FC2 reads without a copy), FC2's y row-major
    (the residual stream's), FC1's dx row-major; the whole MLP equals masked dense, gradients included."""
    torch.manual_seed(0)
    c = 32
    layers = []
    for out_features, in_features in ((4 * c, c), (c, 4 * c)):
        linear = nn.Linear(in_features, out_features)
        linear.register_buffer("weight_mask", banded_mask(out_features, in_features, 12))
        layers.append(linear)
    x = torch.randn(3, 17, c, requires_grad=True)
    fc1, fc2 = (BandedLinear(linear, block=16) for linear in layers)
    h = F.gelu(fc1(x))
    assert cpu.is_tokens_last(h.reshape(-1, 4 * c))
    y = fc2(h)
    assert y.is_contiguous()
    y.square().sum().backward()
    assert x.grad.is_contiguous()
    got = [x.grad, *(p.grad for linear in layers for p in (linear.weight, linear.bias))]
    x2 = x.detach().clone().requires_grad_()
    for linear in layers:
        linear.weight.grad = linear.bias.grad = None
    h = F.gelu(F.linear(x2, layers[0].weight * layers[0].weight_mask, layers[0].bias))
    ref = F.linear(h, layers[1].weight * layers[1].weight_mask, layers[1].bias)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    ref.square().sum().backward()
    expected = [x2.grad]
    for linear in layers:
        expected += [linear.weight.grad * linear.weight_mask, linear.bias.grad]
    for a, e in zip(got, expected, strict=True):
        torch.testing.assert_close(a, e, atol=1e-4, rtol=1e-4)


def test_other_dtypes_take_the_reference() -> None:
    linear = nn.Linear(16, 64).to(torch.bfloat16)
    linear.register_buffer("weight_mask", banded_mask(64, 16, 8))
    banded = BandedLinear(linear, block=16)
    banded(torch.randn(5, 16, dtype=torch.bfloat16))
    assert "plan" in banded._cache and "cpu_plan" not in banded._cache


def test_the_library_is_built_once_per_machine_and_reused(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cpu._load.cache_clear()
    try:
        assert cpu.unavailable() is None
        (built,) = (tmp_path / "sparsity-lab" / "banded_cpu").glob("banded-*.so")
        assert built == cpu.library_path(cpu.compiler())
        stamp = built.stat().st_mtime_ns
        cpu._load.cache_clear()
        assert cpu.unavailable() is None and built.stat().st_mtime_ns == stamp  # loaded, not rebuilt
        assert [p.name for p in built.parent.iterdir()] == [built.name]  # no temporary file left behind
    finally:
        cpu._load.cache_clear()


def test_without_a_compiler_the_reference_runs_and_says_why_once(
    without_c_compiler, caplog: pytest.LogCaptureFixture
) -> None:
    why = "CC=no-such-compiler is not on PATH; install gcc (or set CC) for the compiled CPU kernel"
    assert cpu.unavailable() == why
    linear = nn.Linear(16, 64)
    linear.register_buffer("weight_mask", banded_mask(64, 16, 8))
    banded = BandedLinear(linear, block=16)
    x = torch.randn(5, 16)
    with caplog.at_level(logging.WARNING, logger="kernels.banded"):
        y = banded(x)
        banded(x)
    torch.testing.assert_close(y, F.linear(x, linear.weight * linear.weight_mask, linear.bias))
    assert "plan" in banded._cache and "cpu_plan" not in banded._cache
    warnings = [r.getMessage() for r in caplog.records if "compiled CPU kernel cannot run" in r.getMessage()]
    assert len(warnings) == 1 and "no-such-compiler" in warnings[0]
    with pytest.raises(ValueError, match="banded CPU kernel cannot run: CC=no-such-compiler"):
        cpu.cpu_banded_linear(x, linear.weight, linear.bias, cpu.plan(linear.weight_mask))


def test_a_failing_build_names_the_compiler_error(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "broken.c"
    source.write_text("this is not C;\n")
    monkeypatch.setattr(cpu, "SOURCE", source)
    with pytest.raises(RuntimeError, match="broken.c.* failed: .*error"):
        cpu.build(cpu.compiler(), tmp_path / "out" / "lib.so")
    assert not (tmp_path / "out" / "lib.so").exists() and not list((tmp_path / "out").iterdir())


@pytest.mark.skipif(shutil.which("clang") is None, reason="no clang here")
def test_clang_builds_the_kernel(tmp_path) -> None:
    """The source is GCC and Clang C (vector extensions, shuffles through SHUFFLE8): Clang builds it and the
    library exports every function (not loaded here: it would bring LLVM's OpenMP runtime beside torch's)."""
    path = tmp_path / "banded-clang.so"
    cpu.build(shutil.which("clang"), path)
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True, text=True).stdout
    for suffix in cpu.DTYPES.values():
        for name in cpu.SIGNATURES:
            assert f"banded_{name}_{suffix}" in symbols


def test_the_ctypes_structs_are_laid_out_as_cpu_c_lays_them_out() -> None:
    """Tiles, ForwardArgs and BackwardArgs mirror cpu.c's structs: the same size, and each field, by name, at the
    offset and of the size the compiler gives it (banded_layout): a field added, removed, retyped or moved on one
    side only fails it."""
    out, names = (ctypes.c_int64 * 256)(), ctypes.create_string_buffer(4096)
    written = cpu._load()[0].banded_layout(out, names)
    structs = {
        "banded_tiles": cpu.Tiles,
        "banded_forward_args": cpu.ForwardArgs,
        "banded_backward_args": cpu.BackwardArgs,
    }
    assert list(out[:3]) == [ctypes.sizeof(s) for s in structs.values()]
    fields = names.value.decode().split()
    assert len(fields) == (written - 3) // 2 == sum(len(s._fields_) for s in structs.values())
    for field, offset, size in zip(fields, out[3:written:2], out[4:written:2], strict=True):
        struct, name = field.split(".")
        assert (getattr(structs[struct], name).offset, getattr(structs[struct], name).size) == (offset, size), field


def test_without_bias_and_with_only_some_gradients() -> None:
    """No bias; a frozen weight (dX only), a frozen input (dW only), a bias alone: each matches masked dense."""
    mask, weight, _, x, dy = _case(64, 16, 9, 21, torch.float64)
    p = cpu.plan(mask)
    for wants in ((True, False, False), (False, True, False), (False, False, True)):
        bias = torch.randn(64, dtype=torch.float64) if wants[2] else None
        leaves = [t.clone().requires_grad_(w) for t, w in zip((x, weight), wants[:2], strict=True)]
        args = (*leaves, None if bias is None else bias.clone().requires_grad_())
        y = cpu.cpu_banded_linear(*args, p)
        y.backward(dy)
        ref_args = [t.detach().clone().requires_grad_(t.requires_grad) for t in args if t is not None]
        ref_w = ref_args[1] * mask
        ref = F.linear(ref_args[0], ref_w, ref_args[2] if bias is not None else None)
        ref.backward(dy)
        torch.testing.assert_close(y, ref.detach())
        for got, expected in zip(args, ref_args, strict=False):
            if got is not None and got.requires_grad:
                want = expected.grad * mask if got is args[1] else expected.grad
                torch.testing.assert_close(got.grad, want)
            elif got is not None:
                assert got.grad is None
