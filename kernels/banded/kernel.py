"""Block-banded linear in Triton: ``y = x (W ⊙ M)ᵀ + b`` and its gradients, visiting only the tiles that meet
the band.

The math. For a Linear with weight ``W`` (N = out, K = in), a bool mask ``M`` of the same shape, tokens ``x``
(M_tok, K) and an output gradient ``dy`` (M_tok, N):

    forward   y  = x (W ⊙ M)ᵀ + b             (M_tok, N)
    backward  dx = dy (W ⊙ M)                 (M_tok, K)
              dW = (dyᵀ x) ⊙ M                (N, K): exactly zero outside the mask
              db = Σ_tokens dy                (N,)

The banded masks of :func:`lib.pruning.patterns.banded_mask` keep, on an FC1 weight (rC, C), the entries
``2·|j - i·r| <= w`` (output ``j``, input ``i``) and on an FC2 weight (C, rC) the transpose: with ``a`` the
wide-side index and ``b`` the narrow one, ``2·|a - b·r| <= w``.

The tile plan. Each product is cut into tiles along the two sides it writes, and reduces over the third:

    forward  program (output block n, token block m): for k in [lo(n), hi(n)) step BLOCK_K
                 acc += x[m, k] @ (W[n, k] ⊙ M[n, k])ᵀ
    dX       program (input block k, token block m):  for n in [lo(k), hi(k)) step BLOCK_N
                 acc += dy[m, n] @ (W[n, k] ⊙ M[n, k])
    dW       program (output block n, t-th input tile of its range, s-th run of tokens): for each token block m
             of its run (all tokens, or one of SPLIT_M runs: an autotuned choice)
                 acc += dy[m, n]ᵀ @ x[m, k];  store (or with several runs, add) acc ⊙ M into dW (zeroed, fp32)

``[lo(n), hi(n))`` is the hull of the kept input columns of the output rows of block ``n``: the kernels read it
from per-row spans (:class:`BandRanges`, computed once on the host from the mask, ``row_lo``/``row_hi``; for
dX the per-column spans ``col_lo``/``col_hi`` of the transposed mask) and reduce them over the block with
``tl.min``/``tl.max``. Per-row spans serve every tile shape, so autotuning over BLOCK sizes needs no second
host pass. ``lo`` is rounded down to a multiple of 16 elements, so loads stay aligned; dW's tiles of one block
start there and follow each other, so no two programs write the same entry. Everything outside the hulls is
skipped: tiles that do not meet the band are never loaded, multiplied or written.

The mask. The forward and dX read ``W ⊙ M``, made by :func:`masked_weight` in one elementwise pass over W (for
a banded mask the predicate ``2·|a - b·r| <= w`` is recomputed from the indices, any other mask is read as a
(N, K) uint8 copy), in the dtype they compute in; their loops over the hulls are then plain matmul loops, one
loop per program with nothing but bounds on its loads, which Triton pipelines into the tensor cores. In
training the pass runs in the forward and again for dX (no copy of W held between them); at inference
:meth:`BandRanges.kept_weight` keeps it while the weight is unchanged. dW applies the mask to its tiles'
results before storing them. The result is exact for any mask (the hull covers every kept entry); it is fast
for banded ones, whose hulls are narrow. (Before, each loop applied the mask to its W tiles in registers, split
in three so that the interior tiles ran unmasked; on an H200 that ran the band's FLOPs at a fraction of
cuBLAS's rate, docs/kernels.md.)

FLOPs. Each of the three products costs ``2·M_tok·Σ_blocks BLOCK_N·(hull width)`` instead of the dense
``2·M_tok·N·K``. For a band of width ``w`` (density ``d ≈ (w + 1) / (rC)``) the hull of a block is about
``(BLOCK_N + w) / r + 16`` input columns for FC1 (BLOCK_N wide rows) and ``r·BLOCK_N + w + 16`` for FC2
(BLOCK_N narrow rows), rounded up to whole BLOCK_K tiles: the computed share of the dense FLOPs is ``d`` plus
about ``(tile extent + alignment) / (wide side)``, so small tiles waste less of a narrow band and large tiles
run closer to the tensor cores' peak. Autotuning picks the compromise per shape.

Dtypes. ``x`` in fp32, fp16, bf16 (or fp64, for tests); the weight and bias in any of those. Under autocast the
input may be narrower than the parameters: the kernels compute in ``x``'s dtype (``W ⊙ M`` is made in it),
accumulate in fp32 (fp64 for fp64), return ``y`` and ``dx`` in ``x``'s dtype and ``dW``, ``db``
in the parameters' own dtypes, the contract of :class:`kernels.banded.reference.BandedLinearFunction`. fp32
products use TF32 only when ``torch.get_float32_matmul_precision()`` allows it, as cuBLAS does.

Launch. On a GPU each kernel is autotuned over a few tile shapes (key: tokens, out, in and the widest row span,
plus the tensors' dtypes). Under ``TRITON_INTERPRET=1`` (the CPU tests) there is one small config,
:data:`INTERPRET_BLOCKS`, and two work-arounds (constexpr ``INTERPRET``, compiled away on the GPU) keep the
result the GPU's: 16-bit tiles are upcast to fp32 before ``tl.dot`` (the interpreter's dot would multiply
bf16's raw uint16 storage; products of 16-bit floats are exact in fp32), and fp32 -> bf16 casts round to
nearest even on the bits (the interpreter truncates). The interpreter must be on before Triton is first
imported (``triton.language``'s own helpers are decorated then): ``tests/conftest.py`` sees to it.

References (ideas; the code is ours):

- P. Tillet, H. T. Kung, D. Cox, "Triton: an intermediate language and compiler for tiled neural network
  computations", MAPL 2019, and Triton's matrix multiplication tutorial (``03-matrix-multiplication.py``):
  program per output tile, masked loads, fp32 accumulator, autotuned BLOCK sizes.
- S. Gray, A. Radford, D. P. Kingma, "GPU Kernels for Block-Sparse Weights", OpenAI, 2017: a block-sparse
  weight computes only its nonzero blocks in all three products (forward, dX, dW), the block layout held on
  the host and handed to the kernels as lookup tables.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from kernels.runtime import contents_key, grad_needed, interpreting

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
ALIGN = 16  # a hull starts at a multiple of ALIGN elements (aligned, vectorizable loads): _hull's 16
INTERPRET_BLOCKS = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}  # the one config under TRITON_INTERPRET=1
FP64_BLOCKS = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}  # fp64 on a GPU (tests): products summed in registers


@dataclass(frozen=True, eq=False)
class BandRanges:
    """Where one (out, in) mask keeps entries, as the kernels read it (built by :func:`band_ranges`).

    ``row_lo[j]`` / ``row_hi[j]``: the first kept input column of output row ``j`` and one past its last
    (``in_features`` / 0 for an empty row); ``col_lo[i]`` / ``col_hi[i]``: the same for input column ``i`` over
    output rows. A banded mask (``width > 0``) is recomputed in the kernels from ``ratio`` and ``width``; any
    other mask is read from ``mask`` (uint8, (out, in))."""

    out_features: int
    in_features: int
    row_lo: torch.Tensor  # (out,) int32
    row_hi: torch.Tensor  # (out,) int32
    col_lo: torch.Tensor  # (in,) int32
    col_hi: torch.Tensor  # (in,) int32
    mask: torch.Tensor | None  # (out, in) uint8, None for a banded mask
    ratio: int  # wide side // narrow side
    width: int  # band width w of banded_mask(out, in, w); 0 for a general mask
    span: int  # the widest row span, hi - lo (an autotune key)
    host_rows: torch.Tensor = field(repr=False)  # (out, 2) int64 on the CPU: row_lo, row_hi (dW's grid)
    _tiles: dict = field(default_factory=dict, repr=False, compare=False)
    _kept: dict = field(default_factory=dict, repr=False, compare=False)  # inference's W ⊙ M: kept_weight

    @property
    def banded(self) -> bool:
        return self.width > 0

    @property
    def device(self) -> torch.device:
        return self.row_lo.device

    def to(self, device: torch.device | str) -> BandRanges:
        moved = {k: getattr(self, k).to(device) for k in ("row_lo", "row_hi", "col_lo", "col_hi")}
        mask = None if self.mask is None else self.mask.to(device)
        fixed = (self.out_features, self.in_features)
        return BandRanges(*fixed, **moved, mask=mask, ratio=self.ratio, width=self.width, span=self.span,
                          host_rows=self.host_rows, _tiles=self._tiles)  # fmt: skip

    def kept_weight(self, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """:func:`masked_weight` kept while the weight is unchanged (the same tensor and version; a write through
        ``.data`` bumps no version and would not be seen), for inference: a decoding step then reads only the
        hulls of ``W ⊙ M``, not all of ``W`` to mask it. One dtype kept at a time."""
        key = (contents_key(weight), dtype)
        if self._kept.get("key") != key:
            self._kept.clear()  # the old copy goes before the new one is made
            self._kept.update(key=key, weight=masked_weight(weight.detach(), self, dtype))
        return self._kept["weight"]

    def tiles_per_block(self, block_n: int, block_k: int) -> int:
        """The most BLOCK_K tiles any block of ``block_n`` output rows reads (dW's grid), at least 1."""
        key = (block_n, block_k)
        if key not in self._tiles:
            blocks = -(-self.out_features // block_n)
            pad = blocks * block_n - self.out_features
            lo = torch.nn.functional.pad(self.host_rows[:, 0], (0, pad), value=self.in_features)
            hi = torch.nn.functional.pad(self.host_rows[:, 1], (0, pad), value=0)
            lo = lo.view(blocks, block_n).amin(1) // ALIGN * ALIGN
            hi = hi.view(blocks, block_n).amax(1)
            tiles = (hi - lo + block_k - 1).div(block_k, rounding_mode="floor").clamp(min=0)
            self._tiles[key] = max(1, int(tiles.max()))
        return self._tiles[key]


def _spans(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) per row of a bool (rows, cols) mask: the first kept column and one past the last (cols / 0 for
    an empty row)."""
    cols = mask.shape[1]
    kept = mask.any(1)
    m = mask.to(torch.uint8)
    lo = torch.where(kept, m.argmax(1), cols)  # argmax: the first maximal entry
    hi = torch.where(kept, cols - m.flip(1).argmax(1), 0)
    return lo, hi


@torch.no_grad()
def band_ranges(mask: torch.Tensor) -> BandRanges:
    """The :class:`BandRanges` of a bool (out, in) mask, on the mask's device. Host work over the whole mask:
    build it once per mask (the caller caches it, as :class:`kernels.banded.reference.BandedLinear` caches its
    plan) and pass it to every :func:`triton_banded_linear` call."""
    from kernels.banded import band_width_of  # here: kernels.banded may import this module

    if mask.dim() != 2:
        raise ValueError(f"band ranges: the mask must be 2-D (out, in), got shape {tuple(mask.shape)}")
    device, out_features, in_features = mask.device, *mask.shape
    mask = mask.detach().to("cpu", torch.bool)
    row_lo, row_hi = _spans(mask)
    col_lo, col_hi = _spans(mask.t())
    width = band_width_of(mask) or 0
    ratio = max(out_features, in_features) // min(out_features, in_features)
    span = int((row_hi - row_lo).clamp(min=0).max()) if mask.numel() else 0
    ranges = BandRanges(
        out_features,
        in_features,
        *(t.to(torch.int32) for t in (row_lo, row_hi, col_lo, col_hi)),
        mask=None if width else mask.to(torch.uint8).contiguous(),
        ratio=ratio,
        width=width,
        span=span,
        host_rows=torch.stack([row_lo, row_hi], 1),
    )
    return ranges.to(device)


@triton.jit
def _keep(
    offs_n, offs_k, mask_ptr, stride_mn, stride_mk, N, K, ratio, width, BANDED: tl.constexpr, WIDE_OUT: tl.constexpr
):
    """(BLOCK_N, BLOCK_K) bool: the mask on output rows ``offs_n`` and input columns ``offs_k`` (False outside
    the matrix). A banded mask is recomputed, ``2·|a - b·r| <= w`` (a: wide index, b: narrow; the outputs are
    the wide side, FC1, when WIDE_OUT)."""
    inside = (offs_n[:, None] < N) & (offs_k[None, :] < K)
    if BANDED:
        if WIDE_OUT:
            keep = 2 * tl.abs(offs_n[:, None] - offs_k[None, :] * ratio) <= width
        else:
            keep = 2 * tl.abs(offs_k[None, :] - offs_n[:, None] * ratio) <= width
        keep = keep & inside
    else:
        ptrs = mask_ptr + offs_n[:, None] * stride_mn + offs_k[None, :] * stride_mk
        keep = tl.load(ptrs, mask=inside, other=0) != 0
    return keep


@triton.jit
def _for_dot(t, INTERPRET: tl.constexpr):
    """``t`` as ``tl.dot`` takes it. The interpreter's dot multiplies bf16's raw uint16 storage: there 16-bit
    tiles are upcast to fp32 first, which is exact (products of 16-bit floats are exact in fp32)."""
    if INTERPRET:
        if t.dtype.primitive_bitwidth == 16:
            t = t.to(tl.float32)
    return t


@triton.jit
def _cast(t, dtype: tl.constexpr, INTERPRET: tl.constexpr):
    """``t.to(dtype)`` rounded to nearest even, as on the GPU. The interpreter truncates fp32 -> bf16; there
    the fp32 bits are rounded to bf16's 8-bit mantissa first (the conversion is then exact)."""
    if INTERPRET:
        if (dtype == tl.bfloat16) and (t.dtype == tl.float32):
            bits = t.to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            t = bits.to(tl.float32, bitcast=True)
    return t.to(dtype)


@triton.jit
def _hull(lo_ptr, hi_ptr, offs, n, limit):
    """The hull [lo, hi) of the spans of rows ``offs`` (those < n), lo rounded down to a multiple of 16."""
    lo = tl.min(tl.load(lo_ptr + offs, mask=offs < n, other=limit), axis=0)
    hi = tl.max(tl.load(hi_ptr + offs, mask=offs < n, other=0), axis=0)
    lo = tl.multiple_of(lo // 16 * 16, 16)
    return lo, hi


@triton.jit
def _mma(a, b, acc, FP64: tl.constexpr, PRECISION: tl.constexpr):
    """``acc + a @ b``: ``tl.dot`` (tensor cores), or for fp64, which ``tl.dot`` does not take on every GPU, the
    products summed over the shared axis (the fp64 launches use small tiles: :data:`FP64_BLOCKS`)."""
    if FP64:
        out = acc + tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    else:
        out = tl.dot(a, b, acc, input_precision=PRECISION)
    return out


@triton.jit
def _banded_fwd_kernel(
    # pointers
    x_ptr, w_ptr, b_ptr, y_ptr, row_lo_ptr, row_hi_ptr,
    # sizes
    M, N, K, span,
    # strides
    stride_xm, stride_xk, stride_wn, stride_wk, stride_ym, stride_yn,
    # meta
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    HAS_BIAS: tl.constexpr, FP64: tl.constexpr, INTERPRET: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """y[m, n] = x[m, hull(n)] @ (W ⊙ M)[n, hull(n)]ᵀ + b[n]; program (output block, token block). ``w_ptr``
    holds W ⊙ M in x's dtype (:func:`masked_weight`): a plain matmul loop over the hull, no mask."""
    pid_n = tl.program_id(0)  # fastest: neighbouring programs share the token block of x in L2
    pid_m = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    rows_x = offs_m.to(tl.int64)[:, None] * stride_xm
    lo, hi = _hull(row_lo_ptr, row_hi_ptr, offs_n, N, K)
    if FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(lo, hi, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        x = tl.load(x_ptr + rows_x + offs_k[None, :] * stride_xk, mask=m_ok[:, None] & k_ok[None, :], other=0)
        w_ptrs = w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk
        w = tl.load(w_ptrs, mask=n_ok[:, None] & k_ok[None, :], other=0)
        acc = _mma(_for_dot(x, INTERPRET), tl.trans(_for_dot(w, INTERPRET)), acc, FP64, PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0).to(acc.dtype)[None, :]
    y_ptrs = y_ptr + offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :] * stride_yn
    tl.store(y_ptrs, _cast(acc, y_ptr.dtype.element_ty, INTERPRET), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _banded_dx_kernel(
    # pointers
    dy_ptr, w_ptr, dx_ptr, col_lo_ptr, col_hi_ptr,
    # sizes
    M, N, K, span,
    # strides
    stride_dym, stride_dyn, stride_wn, stride_wk, stride_dxm, stride_dxk,
    # meta
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    FP64: tl.constexpr, INTERPRET: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """dx[m, k] = dy[m, hull(k)] @ (W ⊙ M)[hull(k), k]; program (input block, token block); ``w_ptr`` as in the
    forward."""
    pid_k = tl.program_id(0)
    pid_m = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    k_ok = offs_k < K
    rows_dy = offs_m.to(tl.int64)[:, None] * stride_dym
    lo, hi = _hull(col_lo_ptr, col_hi_ptr, offs_k, K, N)
    if FP64:
        acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for n0 in range(lo, hi, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
        dy = tl.load(dy_ptr + rows_dy + offs_n[None, :] * stride_dyn, mask=m_ok[:, None] & n_ok[None, :], other=0)
        w_ptrs = w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk
        w = tl.load(w_ptrs, mask=n_ok[:, None] & k_ok[None, :], other=0)
        acc = _mma(_for_dot(dy, INTERPRET), _for_dot(w, INTERPRET), acc, FP64, PRECISION)
    dx_ptrs = dx_ptr + offs_m.to(tl.int64)[:, None] * stride_dxm + offs_k[None, :] * stride_dxk
    tl.store(dx_ptrs, _cast(acc, dx_ptr.dtype.element_ty, INTERPRET), mask=m_ok[:, None] & k_ok[None, :])


@triton.jit
def _masked_weight_kernel(
    w_ptr, out_ptr, mask_ptr, N, K, ratio, width,
    stride_wn, stride_wk, stride_mn, stride_mk, stride_on, stride_ok,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BANDED: tl.constexpr, WIDE_OUT: tl.constexpr,
    INTERPRET: tl.constexpr,
):  # fmt: skip
    """out = (W ⊙ M) in out's dtype, tile by tile: the band recomputed from the indices, any other mask loaded."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    inside = (offs_n[:, None] < N) & (offs_k[None, :] < K)
    keep = _keep(offs_n, offs_k, mask_ptr, stride_mn, stride_mk, N, K, ratio, width, BANDED, WIDE_OUT)
    w = tl.load(w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk, mask=inside, other=0)
    w = _cast(tl.where(keep, w, 0), out_ptr.dtype.element_ty, INTERPRET)
    tl.store(out_ptr + offs_n[:, None] * stride_on + offs_k[None, :] * stride_ok, w, mask=inside)


@triton.jit
def _banded_dw_kernel(
    # pointers
    dy_ptr, x_ptr, dw_ptr, mask_ptr, row_lo_ptr, row_hi_ptr,
    # sizes
    M, N, K, ratio, width, span,
    # strides
    stride_dym, stride_dyn, stride_xm, stride_xk, stride_mn, stride_mk, stride_dwn, stride_dwk,
    # meta
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    BANDED: tl.constexpr, WIDE_OUT: tl.constexpr, FP64: tl.constexpr, INTERPRET: tl.constexpr, PRECISION: tl.constexpr,
    SPLIT_M: tl.constexpr = 1,
):  # fmt: skip
    """dW[n, k] = (dy[:, n]ᵀ @ x[:, k]) ⊙ M[n, k] on the t-th tile of output block n's hull, over the s-th of
    SPLIT_M runs of tokens; program (t, n, s). Only tiles that meet the hull are written; dW is allocated as
    zeros, so it is exactly zero off the mask. SPLIT_M > 1 (more programs where a narrow layer's grid of tiles
    leaves multiprocessors idle): each run's sums are added to dW (fp32 or fp64) with atomics, in no fixed
    order; :func:`launch_grad_weight` takes SPLIT_M = 1 when torch asks for deterministic algorithms."""
    pid_t = tl.program_id(0)
    pid_n = tl.program_id(1)
    run = tl.cdiv(tl.cdiv(M, SPLIT_M), BLOCK_M) * BLOCK_M  # tokens per run: whole blocks
    m_first = tl.program_id(2) * run
    m_last = tl.minimum(m_first + run, M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    lo, hi = _hull(row_lo_ptr, row_hi_ptr, offs_n, N, K)
    k0 = lo + pid_t * BLOCK_K
    if k0 < hi:  # the grid covers the widest hull; narrower ones have fewer tiles
        offs_k = k0 + tl.arange(0, BLOCK_K)
        n_ok = offs_n < N
        k_ok = offs_k < K
        if FP64:
            acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float64)
        else:
            acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for m0 in range(m_first, m_last, BLOCK_M):
            offs_m = m0 + tl.arange(0, BLOCK_M)
            m_ok = offs_m < M
            offs_m = offs_m.to(tl.int64)
            dy = tl.load(dy_ptr + offs_m[:, None] * stride_dym + offs_n[None, :] * stride_dyn,
                         mask=m_ok[:, None] & n_ok[None, :], other=0)  # fmt: skip
            x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk,
                        mask=m_ok[:, None] & k_ok[None, :], other=0)  # fmt: skip
            acc = _mma(tl.trans(_for_dot(dy, INTERPRET)), _for_dot(x, INTERPRET), acc, FP64, PRECISION)
        keep = _keep(offs_n, offs_k, mask_ptr, stride_mn, stride_mk, N, K, ratio, width, BANDED, WIDE_OUT)
        dw_ptrs = dw_ptr + offs_n[:, None] * stride_dwn + offs_k[None, :] * stride_dwk
        if SPLIT_M == 1:
            acc = tl.where(keep, acc, 0)  # zeros off the mask (dW holds zeros there already): unpredicated stores
            tl.store(dw_ptrs, _cast(acc, dw_ptr.dtype.element_ty, INTERPRET), mask=n_ok[:, None] & k_ok[None, :])
        else:
            # relaxed: the adds need atomicity, not ordering (the stream orders dW's readers after the kernel); the
            # default acq_rel compiled into ATOMG with memory fences around each (python -m kernels.codegen)
            tl.atomic_add(dw_ptrs, acc.to(dw_ptr.dtype.element_ty), mask=keep, sem="relaxed")  # keep: in bounds too


def _configs() -> list[triton.Config]:
    """GPU tile shapes (BLOCK_M tokens, BLOCK_N outputs, BLOCK_K inputs); each kernel picks its own per key."""
    shapes = [  # (M, N, K, warps, stages)
        (128, 256, 64, 8, 3),  # wide layers: fewer, larger tiles
        (256, 128, 64, 8, 3),
        (128, 128, 64, 8, 3),
        (128, 64, 64, 4, 4),
        (64, 128, 64, 4, 4),
        (64, 64, 64, 4, 4),
        (128, 64, 32, 4, 4),
        (64, 64, 32, 4, 5),
        (32, 64, 64, 4, 4),
        (64, 32, 32, 4, 4),  # narrow layers: more programs for dW's (tile, output block) grid
    ]
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s) for m, n, k, w, s in shapes
    ]


def _split_configs() -> list[triton.Config]:
    """dW's extra configs: mid-sized tiles over 2 or 4 runs of tokens (more programs for a narrow layer: GPT-2
    small's FC1 at d = 0.12 has 72 (tile, output block) programs of 128 x 64 for 132 multiprocessors)."""
    shapes = [(64, 128, 64, 4, 4), (64, 64, 64, 4, 4), (128, 64, 32, 4, 4)]
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "SPLIT_M": split}, num_warps=w, num_stages=s)
        for m, n, k, w, s in shapes
        for split in (2, 4)
    ]


_KEY = ["M", "N", "K", "span"]  # Triton adds the tensors' dtypes
# (BLOCK sizes, launch options) for every kernel on a GPU instead of autotuning, or None: the GPU tests set it
# (tests/kernels/banded/test_triton.py), since autotuning compiles and times every config for each new shape
# and dtype, about a minute per test there; one test keeps the autotuned launch
FIXED_CONFIG: tuple[dict, dict] | None = None
# the two tiles each kernel's loop stages in shared memory, (rows, cols) from a config's BLOCK sizes
_STAGED = {
    _banded_fwd_kernel: (("BLOCK_M", "BLOCK_K"), ("BLOCK_N", "BLOCK_K")),  # x and W ⊙ M
    _banded_dx_kernel: (("BLOCK_M", "BLOCK_N"), ("BLOCK_N", "BLOCK_K")),  # dy and W ⊙ M
    _banded_dw_kernel: (("BLOCK_M", "BLOCK_N"), ("BLOCK_M", "BLOCK_K")),  # dy and x
}


def shared_bytes(kernel, config: triton.Config, itemsize: int) -> int:
    """The shared memory ``kernel``'s software pipeline takes with ``config`` for operands of ``itemsize`` bytes:
    ``num_stages`` copies of the two tiles its loop stages (what Triton allocated for every config compiled for
    sm_90 by ``python -m kernels.codegen``'s method, to the byte)."""
    tiles = sum(config.kwargs[rows] * config.kwargs[cols] for rows, cols in _STAGED[kernel])
    return config.num_stages * tiles * itemsize


@functools.cache
def _shared_limit(device: int) -> int:
    return torch.cuda.get_device_properties(device).shared_memory_per_block_optin


def _fitting(kernel):
    """An ``early_config_prune`` for ``kernel``: the configs whose pipeline fits the GPU's shared memory per
    block for the call's operand dtype (128 x 256 tiles in 3 stages of 16-bit operands take 288 KiB in dX and dW,
    more than a Hopper block has; fp32 operands take twice a config's 16-bit bytes). A config that does not fit
    would be compiled, then fail to launch, costing the autotuning its compile time."""

    def prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
        operand = named_args.get("x_ptr", named_args.get("dy_ptr"))
        limit = _shared_limit(operand.device.index or 0)
        size = operand.element_size()
        fit = [c for c in configs if shared_bytes(kernel, c, size) <= limit]
        return fit or [min(configs, key=lambda c: shared_bytes(kernel, c, size))]

    return prune


_TUNED = {
    kernel: triton.autotune(configs=_configs(), key=_KEY, prune_configs_by={"early_config_prune": _fitting(kernel)})(
        kernel
    )
    for kernel in (_banded_fwd_kernel, _banded_dx_kernel, _banded_dw_kernel)
}
# dW with the token-split configs too (atomics: dW zeroed before each config is timed and before the real run);
# _TUNED's dW (one run of tokens per program) serves torch.use_deterministic_algorithms(True)
_TUNED_DW_SPLIT = triton.autotune(
    configs=_configs() + _split_configs(),
    key=_KEY,
    reset_to_zero=["dw_ptr"],
    prune_configs_by={"early_config_prune": _fitting(_banded_dw_kernel)},
)(_banded_dw_kernel)
INTERPRET_SPLIT_M = 1  # dW's runs of tokens under the interpreter (a test sets more to check the atomic path)


def _launch(kernel, grid, *args, tuned=None, **meta) -> None:
    """``kernel`` over ``grid`` (a function of the launch's constexprs): autotuned on a GPU (by ``tuned``, default
    ``_TUNED[kernel]``), with :data:`INTERPRET_BLOCKS` under the interpreter."""
    if interpreting():
        if not hasattr(kernel, "rewrite"):  # a compiled JITFunction: the module was imported before the switch
            raise RuntimeError(
                "TRITON_INTERPRET=1 was set after Triton was imported: set it before the first `import triton` "
                "(tests/conftest.py does)"
            )
        kernel[grid({**meta, **INTERPRET_BLOCKS})](*args, **meta, **INTERPRET_BLOCKS)
    elif meta["FP64"]:  # no tensor cores: small tiles (see _mma), no tuning
        kernel[grid({**meta, **FP64_BLOCKS})](*args, **meta, **FP64_BLOCKS)
    elif FIXED_CONFIG is not None:  # the tests on a GPU: one tile shape
        blocks, launch = FIXED_CONFIG
        kernel[grid({**meta, **blocks})](*args, **meta, **blocks, **launch)
    else:
        (tuned or _TUNED[kernel])[grid](*args, **meta)


def _dtype_meta(dtype: torch.dtype) -> dict:
    """The dtype constexprs: fp64 accumulation for fp64, the interpreter's work-arounds, and IEEE fp32 products
    unless torch allows TF32 (``torch.set_float32_matmul_precision``); fp64 is IEEE, 16-bit dtypes take Triton's
    default (the setting concerns fp32 operands only)."""
    tf32 = dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest"
    ieee = dtype == torch.float64 or (dtype == torch.float32 and not tf32)
    return {"FP64": dtype == torch.float64, "INTERPRET": interpreting(), "PRECISION": "ieee" if ieee else "tf32"}


def _mask_args(r: BandRanges) -> tuple:
    """(mask pointer, its strides): a general mask, or a placeholder the banded kernels never read."""
    mask = r.mask if r.mask is not None else r.row_lo
    return (mask, *(r.mask.stride() if r.mask is not None else (0, 0)))


MASK_BLOCKS = {"BLOCK_N": 32, "BLOCK_K": 128}  # masked_weight's tiles on a GPU (an elementwise pass: no tuning)


def masked_weight(weight: torch.Tensor, r: BandRanges, dtype: torch.dtype) -> torch.Tensor:
    """``W ⊙ M`` (out, in) in ``dtype``: the operand of the forward and dX kernels, made in one elementwise pass
    (the band recomputed from the indices, a general mask read), so that their loops over the hulls are plain
    matmul loops (no mask, no cast) and an autocast fp32 weight is read as 16 bits there."""
    out = torch.empty(r.out_features, r.in_features, dtype=dtype, device=weight.device)
    blocks = INTERPRET_BLOCKS if interpreting() else MASK_BLOCKS
    blocks = {"BLOCK_N": blocks["BLOCK_N"], "BLOCK_K": blocks["BLOCK_K"]}
    mask, stride_mn, stride_mk = _mask_args(r)
    grid = (triton.cdiv(r.out_features, blocks["BLOCK_N"]), triton.cdiv(r.in_features, blocks["BLOCK_K"]))
    _masked_weight_kernel[grid](
        weight, out, mask, r.out_features, r.in_features, r.ratio, r.width,
        *weight.stride(), stride_mn, stride_mk, *out.stride(),
        BANDED=r.banded, WIDE_OUT=r.out_features >= r.in_features, INTERPRET=interpreting(), **blocks,
    )  # fmt: skip
    return out


def launch_forward(x2: torch.Tensor, wm: torch.Tensor, bias: torch.Tensor | None, r: BandRanges) -> torch.Tensor:
    """``x2`` (M, in) -> ``y`` (M, out) in ``x2``'s dtype; ``wm`` the :func:`masked_weight` in that dtype."""
    m, n, k = x2.shape[0], r.out_features, r.in_features
    y = torch.empty(m, n, dtype=x2.dtype, device=x2.device)
    if m == 0:
        return y
    _launch(
        _banded_fwd_kernel,
        lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), triton.cdiv(m, meta["BLOCK_M"])),
        x2, wm, bias if bias is not None else y, y, r.row_lo, r.row_hi,
        m, n, k, r.span,
        *x2.stride(), *wm.stride(), *y.stride(),
        HAS_BIAS=bias is not None, **_dtype_meta(x2.dtype),
    )  # fmt: skip
    return y


def launch_grad_input(dy2: torch.Tensor, wm: torch.Tensor, r: BandRanges) -> torch.Tensor:
    """``dy2`` (M, out) -> ``dx`` (M, in) in ``dy2``'s dtype; ``wm`` the :func:`masked_weight` in that dtype."""
    m, n, k = dy2.shape[0], r.out_features, r.in_features
    dx = torch.empty(m, k, dtype=dy2.dtype, device=dy2.device)
    if m == 0:
        return dx
    _launch(
        _banded_dx_kernel,
        lambda meta: (triton.cdiv(k, meta["BLOCK_K"]), triton.cdiv(m, meta["BLOCK_M"])),
        dy2, wm, dx, r.col_lo, r.col_hi,
        m, n, k, r.span,
        *dy2.stride(), *wm.stride(), *dx.stride(),
        **_dtype_meta(dy2.dtype),
    )  # fmt: skip
    return dx


def launch_grad_weight(dy2: torch.Tensor, x2: torch.Tensor, r: BandRanges, dtype: torch.dtype) -> torch.Tensor:
    """``dW`` (out, in) in ``dtype``: ``(dy2ᵀ x2) ⊙ M``, exactly zero outside the mask. Summed in fp32 (fp64 for
    fp64) in the kernel, into a buffer of that dtype (runs of tokens may add to it with atomics), and returned in
    ``dtype``."""
    m, n, k = dy2.shape[0], r.out_features, r.in_features
    dw = torch.zeros(n, k, dtype=torch.float64 if dtype == torch.float64 else torch.float32, device=dy2.device)
    if m == 0:
        return dw.to(dtype)
    mask, stride_mn, stride_mk = _mask_args(r)
    deterministic = torch.are_deterministic_algorithms_enabled()
    split = {"SPLIT_M": 1 if deterministic else INTERPRET_SPLIT_M} if interpreting() else {}
    _launch(
        _banded_dw_kernel,
        lambda meta: (r.tiles_per_block(meta["BLOCK_N"], meta["BLOCK_K"]), triton.cdiv(n, meta["BLOCK_N"]),
                      meta.get("SPLIT_M", 1)),
        dy2, x2, dw, mask, r.row_lo, r.row_hi,
        m, n, k, r.ratio, r.width, r.span,
        *dy2.stride(), *x2.stride(), stride_mn, stride_mk, *dw.stride(),
        tuned=None if deterministic else _TUNED_DW_SPLIT,
        BANDED=r.banded, WIDE_OUT=n >= k, **_dtype_meta(dy2.dtype), **split,
    )  # fmt: skip
    return dw.to(dtype)


class TritonBandedLinearFunction(torch.autograd.Function):
    """``x (W ⊙ M)ᵀ + b`` with the Triton kernels; ``x`` of any shape (..., in). Computes in ``x``'s dtype and
    returns ``dW`` and ``db`` in the parameters' dtypes (autocast: fp32 parameters, 16-bit activations)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, r: BandRanges) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        y = launch_forward(x2, masked_weight(weight, r, x2.dtype), bias, r)
        ctx.save_for_backward(x2, weight)  # not W ⊙ M: dX makes it again (a pass over W, no copy held)
        ctx.ranges, ctx.lead = r, lead
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y.view(*lead, r.out_features)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: torch.Tensor):
        x2, weight = ctx.saved_tensors
        r = ctx.ranges
        dy2 = dy.reshape(-1, r.out_features)
        if dy2.dtype != x2.dtype:  # a gradient in another dtype than the output: compute in the input's
            dy2 = dy2.to(x2.dtype)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = launch_grad_input(dy2, masked_weight(weight, r, dy2.dtype), r).view(*ctx.lead, r.in_features)
        if ctx.needs_input_grad[1]:
            dw = launch_grad_weight(dy2, x2, r, weight.dtype)
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            db = dy2.sum(0, dtype=torch.float64 if dy2.dtype == torch.float64 else torch.float32).to(ctx.bias_dtype)
        return dx, dw, db, None


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, r: BandRanges) -> None:
    if weight.shape != (r.out_features, r.in_features):
        raise ValueError(f"banded linear: weight {tuple(weight.shape)}, ranges of a ({r.out_features}, "
                         f"{r.in_features}) mask")  # fmt: skip
    if x.shape[-1] != r.in_features:
        raise ValueError(f"banded linear: input of {x.shape[-1]} features, weight of {r.in_features}")
    if bias is not None and bias.shape != (r.out_features,):
        raise ValueError(f"banded linear: bias {tuple(bias.shape)} for {r.out_features} outputs")
    for name, t in (("input", x), ("weight", weight), ("bias", bias)):
        if t is not None and t.dtype not in DTYPES:
            raise TypeError(f"banded linear: {name} of dtype {t.dtype}; the kernel takes {DTYPES}")
        if t is not None and t.device != r.device:
            raise ValueError(f"banded linear: {name} on {t.device}, ranges on {r.device} (use ranges.to(device))")


def triton_banded_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, ranges: BandRanges
) -> torch.Tensor:
    """``x (W ⊙ M)ᵀ + b`` for ``x`` (..., in), ``weight`` (out, in), ``bias`` (out,) or None and the
    :func:`band_ranges` of the mask ``M`` (on ``x``'s device); differentiable in ``x``, ``weight`` and
    ``bias``. Runs where :func:`kernels.runtime.use_triton` holds for ``x``."""
    _check(x, weight, bias, ranges)
    if grad_needed(x, weight, bias):
        ranges._kept.clear()  # training (again, after an evaluation): the kept W ⊙ M is not held through it
        return TritonBandedLinearFunction.apply(x, weight, bias, ranges)
    x2 = x.reshape(-1, x.shape[-1])  # inference: W ⊙ M kept between calls, no autograd
    y = launch_forward(x2, ranges.kept_weight(weight, x2.dtype), bias, ranges)
    return y.view(*x.shape[:-1], ranges.out_features)
