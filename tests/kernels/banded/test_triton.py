"""The Triton block-banded linear against fp64 masked dense: forward, dX, dW and db on odd FC1 and FC2 shapes,
non-contiguous inputs with leading batch dims, mixed (autocast) dtypes and general masks; dW exactly zero
outside the mask. On CUDA the kernels compile; without it they run on CPU tensors under Triton's interpreter
(see ``tests/conftest.py``: Triton is imported for the interpreter, and each test here switches it on)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kernels.runtime import interpreting, triton_installed
from lib.pruning.patterns import banded_mask

if not triton_installed():
    pytest.skip("Triton is not installed (Linux x86-64 only)", allow_module_level=True)

from kernels.banded import BandedLinear, kernel  # noqa: E402
from kernels.banded.kernel import band_ranges, triton_banded_linear  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")

# dtype -> (atol, rtol) against fp64 masked dense of the same (rounded) inputs: fp32 accumulation error for
# fp32, the result's rounding (2^-11, 2^-8 relative) for fp16 and bf16
TOLERANCES = {
    torch.float32: (1e-5, 1e-4),
    torch.float16: (1e-3, 2e-3),
    torch.bfloat16: (8e-3, 8e-3),
    torch.float64: (1e-12, 1e-10),
}

# (out, in, band width): FC1 and FC2, sizes that are no multiple of the 16-wide interpreter tiles, bands that
# span several tiles (FC2's (24, 96, 30): 94 input columns per block of 16 output rows), and bands wide enough
# that a hull runs to the matrix's edge ((70, 70, 90), (40, 80, 120): loads cut by the bounds alone)
SHAPES = [(111, 37, 10), (37, 111, 10), (96, 24, 7), (24, 96, 30), (70, 70, 90), (40, 80, 120)]


@pytest.fixture(autouse=True)
def triton_interpreter(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Without CUDA: the interpreter, for this test only (Triton itself was imported for it at collection). On a
    GPU: one tile shape for every launch (no autotuning), unless the test is marked ``autotuned``."""
    if not CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    elif request.node.get_closest_marker("autotuned") is None:
        blocks = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}
        monkeypatch.setattr(kernel, "FIXED_CONFIG", (blocks, {"num_warps": 4, "num_stages": 3}))


def _tensors(out_features: int, in_features: int, dtype: torch.dtype, param_dtype: torch.dtype | None = None):
    """x (3, 5, in) non-contiguous, W (not pre-masked: the kernels must apply the mask), b, dy (3, 5, out)
    non-contiguous."""
    gen = torch.Generator().manual_seed(0)
    param_dtype = param_dtype or dtype
    x = torch.randn(3, 5, 2 * in_features, generator=gen)[..., ::2].to(DEVICE, dtype)
    weight = torch.randn(out_features, in_features, generator=gen).to(DEVICE, param_dtype)
    bias = torch.randn(out_features, generator=gen).to(DEVICE, param_dtype)
    dy = torch.randn(5, 3, out_features, generator=gen).to(DEVICE, dtype).transpose(0, 1)
    return x, weight, bias, dy


def _run(x, weight, bias, dy, ranges):
    """(y, dx, dW, db) of the kernel."""
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias)]
    y = triton_banded_linear(*leaves, ranges)
    y.backward(dy)
    return (y.detach(), *(t.grad for t in leaves))


def _reference(x, weight, bias, dy, mask, weight_dtype=None):
    """(y, dx, dW ⊙ M, db) of autograd through masked dense in fp64, from the inputs as the kernel sees them
    (the weight rounded to ``weight_dtype``, x's dtype by default: the kernel computes in x's dtype)."""
    weight_dtype = weight_dtype or x.dtype
    leaves = [t.detach().double().requires_grad_() for t in (x, weight.to(weight_dtype), bias)]
    xd, wd, bd = leaves
    y = xd @ (wd * mask.to(wd.device)).T + bd
    y.backward(dy.double())
    return y.detach(), xd.grad, wd.grad * mask.to(wd.device), bd.grad


def _assert_close(got, expected, dtype: torch.dtype) -> None:
    atol, rtol = TOLERANCES[dtype]
    for name, a, b in zip(("y", "dx", "dW", "db"), got, expected, strict=True):
        torch.testing.assert_close(a.double(), b, atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_gradients_match_fp64_masked_dense(shape: tuple[int, int, int], dtype: torch.dtype) -> None:
    out_features, in_features, width = shape
    mask = banded_mask(out_features, in_features, width)
    ranges = band_ranges(mask.to(DEVICE))
    assert ranges.mask is None  # a band: recomputed in the kernels from (r, w), not loaded
    assert torch.equal(banded_mask(out_features, in_features, ranges.width), mask)  # w = 7 keeps what 6 does
    x, weight, bias, dy = _tensors(out_features, in_features, dtype)
    got = _run(x, weight, bias, dy, ranges)
    assert got[0].shape == (3, 5, out_features) and got[1].shape == x.shape
    assert all(g.dtype == dtype for g in got)
    _assert_close(got, _reference(x, weight, bias, dy, mask), dtype)
    assert not got[2][~mask.to(DEVICE)].any()  # dW is exactly zero outside the band


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_autocast_dtypes_compute_in_the_input_dtype_and_return_parameter_dtype_grads(dtype: torch.dtype) -> None:
    """fp32 parameters, 16-bit activations (autocast): y and dx in x's dtype, dW and db in fp32. The weight is
    rounded to x's dtype in registers; dW = dyᵀ x of 16-bit values, accumulated and stored in fp32."""
    mask = banded_mask(96, 24, 7)
    x, weight, bias, dy = _tensors(96, 24, dtype, param_dtype=torch.float32)
    y, dx, dw, db = _run(x, weight, bias, dy, band_ranges(mask.to(DEVICE)))
    assert (y.dtype, dx.dtype, dw.dtype, db.dtype) == (dtype, dtype, torch.float32, torch.float32)
    ref = _reference(x, weight, bias, dy, mask)
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(y.double(), ref[0], atol=atol, rtol=rtol)
    torch.testing.assert_close(dx.double(), ref[1], atol=atol, rtol=rtol)
    torch.testing.assert_close(dw.double(), ref[2], atol=1e-5, rtol=1e-5)  # fp32 sums of exact products
    torch.testing.assert_close(db.double(), ref[3], atol=1e-5, rtol=1e-5)
    assert not dw[~mask.to(DEVICE)].any()


def test_a_general_mask_is_read_from_memory_with_empty_rows_and_columns() -> None:
    """Any mask: the hulls cover every kept entry and the mask is loaded tile by tile."""
    gen = torch.Generator().manual_seed(1)
    mask = banded_mask(80, 40, 16) & (torch.rand(80, 40, generator=gen) > 0.3)
    mask[5:9] = False  # empty output rows
    mask[:, 17] = False  # an empty input column
    mask[70, 2] = mask[3, 39] = True  # entries far off the band: hulls that reach across the matrix
    ranges = band_ranges(mask.to(DEVICE))
    assert not ranges.banded and ranges.mask is not None
    x, weight, bias, dy = _tensors(80, 40, torch.float32)
    got = _run(x, weight, bias, dy, ranges)
    _assert_close(got, _reference(x, weight, bias, dy, mask), torch.float32)
    assert not got[2][~mask.to(DEVICE)].any()
    assert not got[0][..., 5:9].sub(bias[5:9]).any()  # empty rows: the bias alone


@pytest.mark.parametrize("general", [False, True], ids=["band", "general mask"])
def test_inference_keeps_the_masked_weight_until_the_weight_changes(general: bool) -> None:
    """The forward and dX read W ⊙ M made in one pass (masked_weight: the band recomputed from the indices, or a
    general mask read), exactly, in the dtype they compute in (16-bit: rounded to nearest even). Without
    autograd (decoding) it is kept while the weight is the same tensor at the same version; an in-place write
    (an optimizer step) makes it again, so outputs follow the weight; a call with autograd drops it."""
    mask = banded_mask(96, 24, 7)
    if general:
        mask &= torch.rand(96, 24, generator=torch.Generator().manual_seed(3)) > 0.3
    ranges = band_ranges(mask.to(DEVICE))
    assert ranges.banded != general
    x, weight, bias, _ = _tensors(96, 24, torch.float32)
    masked = weight * mask.to(DEVICE)
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        assert torch.equal(kernel.masked_weight(weight, ranges, dtype), masked.to(dtype))
    weight.requires_grad_()
    with torch.no_grad():
        y = triton_banded_linear(x, weight, bias, ranges)
        first = ranges.kept_weight(weight, torch.float32)
        assert y.grad_fn is None and ranges.kept_weight(weight, torch.float32) is first
        torch.testing.assert_close(y, x @ masked.T + bias, atol=1e-5, rtol=1e-4)
        weight.mul_(2)
        torch.testing.assert_close(triton_banded_linear(x, weight, bias, ranges), x @ (2 * masked).T + bias,
                                   atol=1e-5, rtol=1e-4)  # fmt: skip
        assert ranges.kept_weight(weight, torch.float32) is not first
    triton_banded_linear(x, weight, bias, ranges)  # with autograd again (training after an evaluation)
    assert not ranges._kept  # the kept copy, as large as W, is not held through training


@pytest.mark.skipif(CUDA, reason="tile shapes are autotuned on a GPU; the interpreter's one config is set here")
def test_other_tile_shapes_give_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hulls over blocks of 32 output rows and 32 input columns, tokens in blocks of 16 (as GPU configs do)."""
    monkeypatch.setattr(kernel, "INTERPRET_BLOCKS", {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32})
    for out_features, in_features, width in [(111, 37, 10), (24, 96, 30)]:
        mask = banded_mask(out_features, in_features, width)
        x, weight, bias, dy = _tensors(out_features, in_features, torch.float32)
        got = _run(x, weight, bias, dy, band_ranges(mask))
        _assert_close(got, _reference(x, weight, bias, dy, mask), torch.float32)


@pytest.mark.skipif(CUDA, reason="the runs of tokens are autotuned on a GPU; the interpreter's count is set here")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_dw_over_several_runs_of_tokens_adds_them_and_deterministic_mode_takes_one(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    """dW's programs split the tokens into 3 runs (15 tokens: one 16-token block, so runs 2 and 3 are empty; 90
    tokens: 32, 32 and 26), each adding its sums to dW with atomics: masked dense's dW, zero off the band, in the
    weight's dtype (fp16: summed in fp32, then rounded). Under torch.use_deterministic_algorithms one run per
    program, bit for bit what the default single run gives."""
    mask = banded_mask(48, 12, 9)
    ranges = band_ranges(mask)
    x, weight, bias, dy = _tensors(48, 12, dtype)
    single = _run(x, weight, bias, dy, ranges)
    monkeypatch.setattr(kernel, "INTERPRET_SPLIT_M", 3)
    got = _run(x, weight, bias, dy, ranges)
    assert got[2].dtype == dtype and not got[2][~mask].any()
    _assert_close(got, _reference(x, weight, bias, dy, mask), dtype)
    x, dy = x.repeat(3, 2, 1), dy.repeat(3, 2, 1)  # 90 tokens
    got = _run(x, weight, bias, dy, ranges)
    _assert_close(got, _reference(x, weight, bias, dy, mask), dtype)
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    x, weight, bias, dy = _tensors(48, 12, dtype)
    assert torch.equal(_run(x, weight, bias, dy, ranges)[2], single[2])


@pytest.mark.autotuned
@pytest.mark.skipif(not CUDA, reason="autotuning runs on a GPU; the interpreter has one config")
def test_the_autotuned_launch_matches_masked_dense() -> None:
    """What a run on a GPU takes: each kernel autotuned over its configs (the other tests fix one), fp16."""
    mask = banded_mask(96, 24, 7)
    x, weight, bias, dy = _tensors(96, 24, torch.float16)
    got = _run(x, weight, bias, dy, band_ranges(mask.to(DEVICE)))
    _assert_close(got, _reference(x, weight, bias, dy, mask), torch.float16)


def test_configs_whose_pipeline_overflows_shared_memory_are_pruned(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a Hopper block's 227 KiB, 16-bit operands: dX and dW drop their 128 x 256 and 256 x 128 configs (3
    stages of two tiles: 288 KiB and 240 KiB; the forward's take 144 KiB and stay); fp32 operands drop two, four
    and four; with too little for any, the smallest config is kept."""
    monkeypatch.setattr(kernel, "_shared_limit", lambda device: 232448)
    fp16, fp32 = torch.empty(1, dtype=torch.float16), torch.empty(1, dtype=torch.float32)
    configs = kernel._configs()
    big = [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in configs[:2]]
    assert big == [(128, 256), (256, 128)]
    assert kernel.shared_bytes(kernel._banded_dx_kernel, configs[0], 2) == 3 * (128 * 256 + 256 * 64) * 2
    # configs dropped (16-bit, fp32), counted by hand from the tiles each loop stages (kernel._STAGED)
    cases = [(kernel._banded_fwd_kernel, "x_ptr", (0, 2)), (kernel._banded_dx_kernel, "dy_ptr", (2, 4))]
    for fn, name, dropped in [*cases, (kernel._banded_dw_kernel, "dy_ptr", (2, 4))]:
        kept = kernel._fitting(fn)(configs, {name: fp16})
        assert len(kept) == len(configs) - dropped[0] and all(c in configs[dropped[0] :] for c in kept)
        assert len(kernel._fitting(fn)(configs, {name: fp32})) == len(configs) - dropped[1]
    monkeypatch.setattr(kernel, "_shared_limit", lambda device: 1)
    smallest = kernel._fitting(kernel._banded_fwd_kernel)(configs, {"x_ptr": fp16})
    assert smallest == [min(configs, key=lambda c: kernel.shared_bytes(kernel._banded_fwd_kernel, c, 2))]


def test_gradcheck_against_finite_differences() -> None:
    """fp64 gradcheck (fast mode: random projections) of the autograd function; the finite differences of
    W outside the band are zero, as the kernel's dW is."""
    mask = banded_mask(40, 10, 9)
    ranges = band_ranges(mask.to(DEVICE))
    gen = torch.Generator().manual_seed(2)
    inputs = [torch.randn(*s, generator=gen, dtype=torch.float64).to(DEVICE) for s in ((2, 3, 10), (40, 10), (40,))]
    inputs = [t.requires_grad_() for t in inputs]
    assert torch.autograd.gradcheck(lambda x, w, b: triton_banded_linear(x, w, b, ranges), inputs, fast_mode=True)


def test_no_bias_and_only_the_gradients_asked_for() -> None:
    mask = banded_mask(37, 111, 10)
    ranges = band_ranges(mask.to(DEVICE))
    x, weight, _, dy = _tensors(37, 111, torch.float32)
    weight.requires_grad_()
    y = triton_banded_linear(x, weight, None, ranges)  # x needs no gradient: dX is not computed
    y.backward(dy)
    leaves = [t.detach().double().requires_grad_() for t in (x, weight)]
    ref = leaves[0] @ (leaves[1] * mask.to(DEVICE)).T
    ref.backward(dy.double())
    torch.testing.assert_close(y.double(), ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(weight.grad.double(), leaves[1].grad * mask.to(DEVICE), atol=1e-5, rtol=1e-4)


def test_band_ranges_are_the_spans_of_the_mask() -> None:
    mask = banded_mask(24, 96, 30)
    ranges = band_ranges(mask)
    for j in range(24):  # output rows: the first and one past the last kept input column
        kept = mask[j].nonzero().flatten()
        assert (ranges.row_lo[j], ranges.row_hi[j]) == (kept.min(), kept.max() + 1)
    for i in range(96):
        kept = mask[:, i].nonzero().flatten()
        assert (ranges.col_lo[i], ranges.col_hi[i]) == (kept.min(), kept.max() + 1)
    assert (ranges.ratio, ranges.width, ranges.span) == (4, 30, int((ranges.row_hi - ranges.row_lo).max()))
    # dW's grid: the most 16-wide tiles from a block's aligned lo to its hi, per block of 16 rows
    lo = [int(ranges.row_lo[b : b + 16].min()) // 16 * 16 for b in (0, 16)]
    hi = [int(ranges.row_hi[b : b + 16].max()) for b in (0, 16)]
    assert ranges.tiles_per_block(16, 16) == max(-(-(h - lo_) // 16) for lo_, h in zip(lo, hi, strict=True))
    empty = band_ranges(torch.zeros(4, 8, dtype=torch.bool))
    assert empty.row_lo.tolist() == [8] * 4 and empty.row_hi.tolist() == [0] * 4
    assert empty.tiles_per_block(16, 16) == 1


def test_bad_arguments_are_refused_and_no_tokens_is_an_empty_result() -> None:
    ranges = band_ranges(banded_mask(24, 8, 4).to(DEVICE))
    weight, bias = torch.randn(24, 8, device=DEVICE), torch.randn(24, device=DEVICE)
    with pytest.raises(ValueError, match="input of 7 features"):
        triton_banded_linear(torch.randn(2, 7, device=DEVICE), weight, bias, ranges)
    with pytest.raises(ValueError, match="weight"):
        triton_banded_linear(torch.randn(2, 8, device=DEVICE), weight.t(), bias, ranges)
    with pytest.raises(TypeError, match="int64"):
        triton_banded_linear(torch.ones(2, 8, dtype=torch.long, device=DEVICE), weight, bias, ranges)
    x = torch.randn(0, 8, device=DEVICE, requires_grad=True)
    w = weight.clone().requires_grad_()
    y = triton_banded_linear(x, w, bias, ranges)
    assert y.shape == (0, 24)
    y.sum().backward()
    assert x.grad.shape == (0, 8) and not w.grad.any()


def test_the_interpreter_is_on_for_cpu_runs() -> None:
    assert CUDA or interpreting()


@pytest.mark.skipif(CUDA, reason="compares the two paths on CPU tensors, which take Triton under the interpreter only")
def test_banded_linear_takes_the_triton_path_where_triton_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """BandedLinear (what the kernel swaps in) runs Triton on tensors Triton can take (here: CPU tensors under
    the interpreter; on a GPU, CUDA tensors) and agrees with its CPU path (the C kernel)."""
    linear = nn.Linear(24, 96).double()
    linear.register_buffer("weight_mask", banded_mask(96, 24, 7))
    x = torch.randn(2, 3, 24, dtype=torch.float64, requires_grad=True)
    banded = BandedLinear(linear, block=16)
    y = banded(x)
    assert "ranges" in banded._cache and "plan" not in banded._cache  # the Triton path's host data only
    y.sum().backward()
    triton_grads = (y.detach(), x.grad, linear.weight.grad, linear.bias.grad)
    x.grad = linear.weight.grad = linear.bias.grad = None
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ref = banded(x)
    assert "cpu_plan" in banded._cache
    ref.sum().backward()
    for a, b in zip(triton_grads, (ref.detach(), x.grad, linear.weight.grad, linear.bias.grad), strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)
