"""Activation-sparse GEMV against dense ``F.linear``: on the GPU (:func:`gpu_rows`, CUDA only: the caller checks)
and on the CPU (:func:`cpu_rows`, the C kernel).

Each row is one decoding GEMV in fp16, with bias: ``x`` (B, K) of standard normal activations and a threshold
``t`` = the ``s``-quantile of ``|x|`` (:func:`threshold_for`), so each row of ``x`` drops a fraction ``s`` of its
entries; the kernel (:func:`kernels.sparse_gemv.kernel.sparse_gemv`, on ``Wᵀ`` contiguous) against dense
``F.linear(x, W, b)`` on the unthresholded input (what the model would run without the kernel). Both are timed
with :func:`kernels.runtime.compare` (CUDA events, L2 flushed before every call, so the weights come from HBM as
in decoding; replayed from CUDA graphs, as decoding loops run, with the eager times beside) and reported as the
median. Shapes: LLaMA-7B-sized projections, 4096 -> 4096, 4096 -> 11008 and
11008 -> 4096 (``K -> N``), at s in {0.4, 0.5, 0.7, 0.9}, batch 1 and (not ``quick``) 4.

``ideal`` = 1/(1-s): the weight bytes not read. ``target`` = 0.8/(1-s): 80% of it. At batch 4 the rows' dropped
channels are independent here, so a weight row is skipped only when all 4 rows drop its channel (``rows_read``:
the fraction of weight rows the kernel reads; ``s^4`` skipped); real activations correlate across a batch more
than these, but the batch-1 rows are the kernel's case. ``max_err``: largest ``|kernel - reference|`` with the
reference ``sparse_linear`` in fp32 on the same fp16 operands (the kernel's output is rounded to fp16 once).
"""

from __future__ import annotations

import statistics

import torch
from torch.nn import functional as F

from kernels.runtime import compare, interleaved, median_ratio, timed
from kernels.sparse_gemv.reference import as_fp32, sparse_linear, sparsify, threshold_for

SPARSITIES = (0.4, 0.5, 0.7, 0.9)
FEATURES = ((4096, 4096), (4096, 11008), (11008, 4096))  # (K in, N out)


def bench(batch: int, k: int, n: int, sparsity: float, reps: int, warmup: int) -> dict:
    from kernels.sparse_gemv.kernel import Workspace, sparse_gemv  # imports Triton: only here, on a GPU

    gen = torch.Generator(device="cuda").manual_seed(0)
    dtype = torch.float16
    weight = (torch.randn(n, k, device="cuda", generator=gen) / k**0.5).to(dtype)  # (N, K): nn.Linear's layout
    bias = torch.randn(n, device="cuda", generator=gen).to(dtype)
    weight_t = weight.t().contiguous()  # (K, N): the kernel's layout
    x = torch.randn(batch, k, device="cuda", generator=gen).to(dtype)
    t = threshold_for(x.abs(), sparsity)
    with torch.no_grad():
        space = Workspace.zeros(x.device, n)  # kept, as SparseGemvLinear keeps one per layer: one launch a call
        y = sparse_gemv(x, weight_t, bias, t, sparsity, space)  # the first call tunes (outside the timings)
        reference = sparse_linear(x.float(), weight.float(), bias.float(), t)
        err = (y.float() - reference).abs().max().item()
        rows_read = (sparsify(x, t) != 0).any(0).float().mean().item()
        timed = compare(lambda: F.linear(x, weight, bias), lambda: sparse_gemv(x, weight_t, bias, t, sparsity, space),
                        reps, warmup)  # fmt: skip
    return {
        "op": "sparse_gemv",
        "shape": f"{k}->{n}",
        "batch": batch,
        "dtype": "float16",
        "density": round(1 - sparsity, 3),
        "sparsity": sparsity,
        "rows_read": round(rows_read, 4),
        **timed,
        "target": round(0.8 / (1 - sparsity), 3),
        "ideal": round(1 / (1 - sparsity), 3),
        "max_err": err,
    }


def gpu_rows(quick: bool = False) -> list[dict]:
    """One row per (batch, shape, sparsity); ``quick``: batch 1 only, 10 timed calls after 3 warm-up calls
    instead of 50 after 10."""
    reps, warmup = (10, 3) if quick else (50, 10)
    batches = (1,) if quick else (1, 4)
    return [bench(b, k, n, s, reps, warmup) for b in batches for k, n in FEATURES for s in SPARSITIES]


def cpu_rows(rounds: int = 40) -> list[dict]:
    """The C kernel (:mod:`kernels.sparse_gemv.cpu`) at batch 1 in fp32 against ``F.linear`` on the
    unthresholded input, the shapes and sparsities of :func:`gpu_rows` plus ``s`` = 0 (threshold 0: every
    channel kept, so the kernel reads all of ``Wᵀ``: how fast it streams the weights against torch's dense
    GEMV; reported, no target); interleaved ``rounds`` times (:func:`kernels.runtime.interleaved`), the median
    per-round ratio. The weights (64-172 MiB) are larger than this machine's last-level cache: they come from
    memory, as in decoding."""
    from kernels.sparse_gemv import cpu

    if why := cpu.unavailable():
        raise RuntimeError(f"the sparse GEMV C kernel cannot run here: {why}")
    rows = []
    for k, n in FEATURES:
        gen = torch.Generator().manual_seed(0)
        weight = torch.randn(n, k, generator=gen) / k**0.5
        bias = torch.randn(n, generator=gen)
        x = torch.randn(1, k, generator=gen)
        rows += [_cpu_row(x, weight, bias, s, rounds) for s in (0.0, *SPARSITIES)]
    return rows


@torch.no_grad()
def _cpu_row(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, sparsity: float, rounds: int) -> dict:
    from kernels.sparse_gemv import cpu

    (n, k), weight_t = weight.shape, weight.t().contiguous()
    t = as_fp32(threshold_for(x.abs(), sparsity))
    y, kept = cpu.cpu_sparse_gemv(x, weight_t, bias, t)
    err = (y - sparse_linear(x.double(), weight.double(), bias.double(), t)).abs().max().item()
    times = interleaved(
        {
            "dense": timed(lambda: F.linear(x, weight, bias)),
            "kernel": timed(lambda: cpu.cpu_sparse_gemv(x, weight_t, bias, t)),
        },
        rounds,
        warmup=3,
    )
    return {
        "op": "sparse_gemv",
        "shape": f"{k}->{n}",
        "batch": 1,
        "dtype": "float32",
        "density": round(1 - sparsity, 3),
        "sparsity": sparsity,
        "rows_read": round(kept / k, 4),
        "dense_ms": round(1e3 * statistics.median(times["dense"]), 4),
        "kernel_ms": round(1e3 * statistics.median(times["kernel"]), 4),
        "speedup": round(median_ratio(times["dense"], times["kernel"]), 3),
        "target": round(0.8 / (1 - sparsity), 3) if sparsity else "",
        "ideal": round(1 / (1 - sparsity), 3),
        "max_err": err,
    }
