"""Activation-sparse GEMV in Triton: ``y = x̃ Wᵀ + b`` for a decoding batch of 1-4 rows, reading only the weight
rows of the input channels that are kept.

The math. For a Linear ``W`` (N_out, K_in), a batch ``x`` (B, K) with B <= 4 and a per-layer threshold ``t``,

    x̃[b, k] = x[b, k] if |x[b, k]| > t else 0                    (magnitude thresholding, TEAL's rule)
    y[b, n] = Σ_k x̃[b, k] · Wᵀ[k, n] + bias[n]

An input channel ``k`` contributes nothing when ``x̃[b, k] = 0`` for every row ``b`` of the batch, so its weight
row ``Wᵀ[k, :]`` need not be read. Decoding at batch 1-4 is bound by reading the weights (2 bytes per weight in
fp16, about 2 FLOPs per weight), so at activation sparsity ``s`` the ideal time is ``(1 - s)`` of the dense GEMV
(the bench's ``ideal = 1/(1-s)``; with several rows only channels no row keeps are skipped, so the batch's
effective sparsity is lower).

Layout. The weight is stored transposed, ``Wᵀ`` (K, N) contiguous (the caller keeps that copy: see
:class:`kernels.sparse_gemv.reference.SparseGemvLinear`), so a skipped input channel is a skipped *contiguous
row* of ``BLOCK_N`` elements: the masked load of that row is predicated off and issues no memory transaction
(a row of 64 fp16 is one 128-byte line). In the usual (N, K) layout a skipped channel would be a strided column,
and every 32-byte sector would still be fetched for its neighbours.

Split-K in one launch. The grid is ``(cdiv(N, BLOCK_N), SPLIT_K)``: program ``(i, j)`` owns output columns
``[i·BLOCK_N, (i+1)·BLOCK_N)`` and the K-blocks ``j, j + SPLIT_K, j + 2·SPLIT_K, ...``; it accumulates its partial
sums in fp32 registers and adds them with a relaxed ``tl.atomic_add`` (a fire-and-forget ``red.add.f32``) into
an fp32 workspace. A GEMV has only ``N / BLOCK_N`` output blocks (32 for N = 4096 and BLOCK_N = 128), too few to
occupy a GPU; split-K multiplies the programs without a second pass over a (SPLIT_K, B, N) buffer, which at 90%
sparsity would cost a sizeable fraction of the weight bytes still read. The last split of a column block to
finish does the rest: each program counts its arrival on the block's counter (an ``acq_rel`` atomic after a
barrier, so every thread's adds are visible before the count is), and the program that sees ``SPLIT_K - 1``
arrivals before its own reads the block's sums, adds the bias, stores ``y`` in the input's dtype, and writes the
sums and the counter back to zero. The workspace (:class:`Workspace`, fp32 ``(MAX_BATCH, N)`` and one int32 per
column, kept by the caller: one per layer) is so zero before every call without a kernel that zeroes it, and the
output needs no kernel that casts it: one launch per GEMV instead of three (zero, GEMV, cast; at 90% sparsity the
three took 14 us on an H200 for 4096 -> 4096, where the weight bytes read take about 1 us; the one launch is not
yet measured: docs/kernels.md). The price: the
order in which the splits' fp32 partials are added varies from run to run, so the result is reproducible to fp32
rounding, not bit for bit; and two launches on one workspace must not overlap.

Dtypes. fp16, bf16 and fp32 inputs (x, Wᵀ and bias of one dtype). Every product and sum is fp32: loads are
upcast in registers, the atomics add fp32 (no bf16 or fp16 atomics, whose rounding at every add would lose
accuracy with SPLIT_K and be slow where the hardware has no native bf16 atomic), and the last split casts
the fp32 sums to the input dtype once, as it stores ``y``. The threshold is compared in fp32:
fp16 and bf16 values are exact in fp32, and the launcher rounds ``t`` to fp32, as the reference does.

Pipelining. The K loop is a ``tl.range`` with ``STAGES`` (1 or 3, tuned): with 3, Triton prefetches the next
blocks' x and weight rows with ``cp.async`` while the current one is summed, so a program keeps several blocks of
weights in flight; a plain ``range`` loop without a dot is not pipelined, and each block's weight load waited on
its x load (one after another: ``python -m kernels.codegen`` showed no ``LDGSTS`` for it on sm_90, 24 with 3
stages).

Autotuning. ``triton.autotune`` over BLOCK_N, BLOCK_K, SPLIT_K, STAGES and warps, keyed on ``(N, K, B, SPARSITY_BIN)``
(and the tensors' dtypes, which Triton's autotuner adds to every key). ``SPARSITY_BIN`` is a host-side
constant per layer, derived from the layer's calibrated target sparsity (:func:`sparsity_bin`), never read from
the device: a denser input wants fewer splits, a sparser one more. Under ``TRITON_INTERPRET=1`` there is one
config (nothing to tune in NumPy, and the tests stay fast). Tiles larger than ``MAX_TILE`` products per program
(``BLOCK_B · BLOCK_K · BLOCK_N``) are pruned before tuning, so batch 4 keeps register pressure bounded.

References (facts cited; the code is ours):

- J. Liu, P. Ponnusamy, T. Cai, H. Guo, Y. Kim, B. Athiwaratkun, "Training-Free Activation Sparsity in Large
  Language Models" (TEAL), arXiv 2408.14690, 2024 (ICLR 2025): magnitude thresholds on the input of every
  projection, calibrated offline per layer; 40-50% model-wide sparsity on Llama-2/3 and Mistral with small
  degradation and a Triton sparse GEMV with 1.53x / 1.8x single-batch decoding speed-ups at 40% / 50%.
- Z. Liu et al., "Deja Vu: Contextual Sparsity for Efficient LLMs at Inference Time", ICML 2023: input-dependent
  sparsity of heads and MLP neurons (predicted ahead of each layer), exploited by skipping the weights of
  inactive channels at decoding.
- D. Lee, J.-Y. Lee, G. Zhang, M. Tiwari, A. Mirhoseini, "CATS: Contextually-Aware Thresholding for Sparsity in
  Large Language Models", COLM 2024 (arXiv 2404.08763): the cutoff of a layer is the smallest ``t`` whose
  empirical CDF of ``|x|`` reaches the target sparsity (what :func:`kernels.sparse_gemv.reference.calibrate`
  computes); a custom kernel gave about 15% lower token-generation latency at 50% sparsity.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from kernels.runtime import interpreting
from kernels.sparse_gemv.reference import DTYPES, MAX_BATCH, as_fp32

MAX_TILE = 16384  # BLOCK_B * BLOCK_K * BLOCK_N products live in registers per program
SPARSITY_BINS = (0.3, 0.6, 0.8)  # bin edges of the calibrated target sparsity: bins 0..3


def sparsity_bin(sparsity: float) -> int:
    """The autotune bin of a layer's calibrated target sparsity (a host constant): 0 below 30%, 1 below 60%,
    2 below 80%, 3 from 80%."""
    return sum(sparsity >= edge for edge in SPARSITY_BINS)


def _configs() -> list[triton.Config]:
    if interpreting():
        return [triton.Config({"BLOCK_N": 32, "BLOCK_K": 16, "SPLIT_K": 2, "STAGES": 1}, num_warps=1)]
    return [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": sk, "STAGES": stages}, num_warps=w)
        for bn, bk, w in ((64, 32, 2), (128, 32, 4), (128, 64, 4), (256, 32, 8), (256, 16, 4))
        for sk in (4, 8, 16, 32)
        for stages in (1, 3)
    ]


def _prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drop tiles too large for the batch's registers (at least one config is always kept)."""
    rows = kwargs.get("BLOCK_B", named_args.get("BLOCK_B", 1))
    fit = [c for c in configs if rows * c.kwargs["BLOCK_K"] * c.kwargs["BLOCK_N"] <= MAX_TILE]
    return fit or configs[:1]


@triton.autotune(
    configs=_configs(),
    key=["N", "K", "B", "SPARSITY_BIN"],
    prune_configs_by={"early_config_prune": _prune},  # (no reset_to_zero: every run leaves its workspace zeroed)
)
@triton.jit
def _sparse_gemv_kernel(
    # pointers
    x_ptr,  # (B, K), any strides
    wt_ptr,  # (K, N): the weight transposed
    bias_ptr,  # (N,), or a dummy when HAS_BIAS is False
    y_ptr,  # (B, N), x's dtype: written once per element, by the last split of its column block
    sums_ptr,  # (B, N) fp32, row stride N, zero on entry and on exit: the splits add into it
    count_ptr,  # (cdiv(N, BLOCK_N),) int32, zero on entry and on exit: the splits of each column block done
    # sizes
    B,
    N,
    K,
    threshold,  # fp32: |x| <= threshold is dropped
    SPARSITY_BIN,  # autotune key only (a host constant per layer)
    # strides
    stride_xb,
    stride_xk,
    stride_wk,
    stride_wn,
    stride_yb,
    # meta-parameters
    HAS_BIAS: tl.constexpr,
    BLOCK_B: tl.constexpr,  # next power of two >= B
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT_K: tl.constexpr,
    STAGES: tl.constexpr,  # the K loop's software pipeline: blocks of x and Wᵀ in flight (1: none)
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_b = tl.arange(0, BLOCK_B)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    b_mask = offs_b < B
    n_mask = offs_n < N
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    for k0 in tl.range(pid_k * BLOCK_K, K, SPLIT_K * BLOCK_K, num_stages=STAGES):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        x = tl.load(
            x_ptr + offs_b[:, None] * stride_xb + offs_k[None, :] * stride_xk,
            mask=b_mask[:, None] & k_mask[None, :],
            other=0.0,
        ).to(tl.float32)  # (BLOCK_B, BLOCK_K)
        keep = tl.abs(x) > threshold
        x = tl.where(keep, x, 0.0)
        # A weight row is read when some row of the batch keeps its channel (padding rows and columns are 0).
        row_needed = tl.max(keep.to(tl.int32), axis=0) > 0  # (BLOCK_K,)
        w = tl.load(
            wt_ptr + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn,
            mask=row_needed[:, None] & n_mask[None, :],
            other=0.0,
        ).to(tl.float32)  # (BLOCK_K, BLOCK_N); skipped rows issue no loads
        acc += tl.sum(x[:, :, None] * w[None, :, :], axis=1)
    # relaxed: the adds need atomicity, not ordering (the count below orders them before the last split's reads)
    y_mask = b_mask[:, None] & n_mask[None, :]
    sums = sums_ptr + offs_b[:, None] * N + offs_n[None, :]
    tl.atomic_add(sums, acc, mask=y_mask, sem="relaxed")
    # Every thread's adds are issued before the barrier, and the count's release (one thread's) is cumulative
    # over them; the split that counts the others' SPLIT_K - 1 arrivals acquires all their adds.
    tl.debug_barrier()
    arrived = tl.atomic_add(count_ptr + pid_n, 1, sem="acq_rel")
    if arrived == SPLIT_K - 1:
        total = tl.load(sums, mask=y_mask, other=0.0, cache_modifier=".cg")  # from L2, where the adds were made
        if HAS_BIAS:
            total += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + offs_b[:, None] * stride_yb + offs_n[None, :], total.to(y_ptr.dtype.element_ty), mask=y_mask)
        tl.store(sums, tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32), mask=y_mask)  # zero for the next call
        tl.store(count_ptr + pid_n, 0)


class Workspace(NamedTuple):
    """What the kernel's splits of an ``N``-column output share: fp32 sums ``(MAX_BATCH, N)`` and int32 column-block
    counters ``(N,)`` (at least one per block), zero before a call and zero again after it (the last split of
    each block writes them back). Two launches on one workspace must not overlap: a caller that keeps one
    (:class:`~kernels.sparse_gemv.reference.SparseGemvLinear` does, per layer) launches on it from one stream at a
    time, and makes it before a CUDA graph captures a call (in the warm-up), so the graph holds no memset."""

    sums: torch.Tensor
    count: torch.Tensor

    @classmethod
    def zeros(cls, device: torch.device, n: int) -> Workspace:
        return cls(
            torch.zeros(MAX_BATCH, n, device=device, dtype=torch.float32),
            torch.zeros(n, device=device, dtype=torch.int32),
        )


def sparse_gemv(
    x: torch.Tensor,
    weight_t: torch.Tensor,
    bias: torch.Tensor | None,
    threshold: float,
    sparsity: float = 0.5,
    workspace: Workspace | None = None,
) -> torch.Tensor:
    """``x`` (B, K) with 1 <= B <= 4, ``weight_t`` = Wᵀ (K, N) contiguous, ``bias`` (N,) or None -> ``y`` (B, N)
    in ``x``'s dtype: ``sparsify(x, threshold) Wᵀ + b``, the input channels no row keeps skipped. ``sparsity``
    is the layer's calibrated target (a host constant): it selects the tuned config through
    :func:`sparsity_bin`, nothing else. ``workspace``: a :class:`Workspace` for N kept by the caller, so the
    call is one launch; without it, one is zeroed for the call (a memset more)."""
    if x.dim() != 2 or not 1 <= x.shape[0] <= MAX_BATCH:
        raise ValueError(f"x of shape {tuple(x.shape)}: (B, K) with 1 <= B <= {MAX_BATCH} (a decoding batch)")
    b, k = x.shape
    if weight_t.dim() != 2 or weight_t.shape[0] != k or not weight_t.is_contiguous():
        raise ValueError(f"weight_t of shape {tuple(weight_t.shape)}: Wᵀ ({k}, N), contiguous")
    n = weight_t.shape[1]
    if k * n >= 2**31:
        raise ValueError(f"Wᵀ of {k}x{n} elements: the kernel's offsets are 32-bit (fewer than 2^31 elements)")
    if x.dtype not in DTYPES or weight_t.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        raise ValueError(f"dtypes {x.dtype}, {weight_t.dtype}: x, Wᵀ and bias of one of fp16, bf16, fp32")
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"bias of shape {tuple(bias.shape)}: ({n},)")
    if x.device != weight_t.device or (bias is not None and bias.device != x.device):
        raise ValueError("x, Wᵀ and bias on one device")
    if workspace is None:
        workspace = Workspace.zeros(x.device, n)
    elif workspace.sums.shape != (MAX_BATCH, n) or workspace.sums.device != x.device:
        raise ValueError(f"workspace for {tuple(workspace.sums.shape)} on {workspace.sums.device}: Workspace.zeros("
                         f"{x.device}, {n})")  # fmt: skip
    y = torch.empty(b, n, device=x.device, dtype=x.dtype)

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])

    _sparse_gemv_kernel[grid](
        x,
        weight_t,
        bias if bias is not None else y,  # never read without HAS_BIAS
        y,
        workspace.sums,
        workspace.count,
        b,
        n,
        k,
        as_fp32(threshold),  # as the reference rounds it
        sparsity_bin(sparsity),
        x.stride(0),
        x.stride(1),
        weight_t.stride(0),
        weight_t.stride(1),
        y.stride(0),
        HAS_BIAS=bias is not None,
        BLOCK_B=triton.next_power_of_2(b),
    )
    return y
