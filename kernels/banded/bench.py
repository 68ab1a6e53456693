"""The Triton banded kernel against cuBLAS dense on a GPU: :func:`gpu_rows`, one row per measurement.

What is measured. One MLP Linear at 4096 tokens, ``y = x (W ⊙ M)ᵀ + b`` with ``M = banded_mask(out, in, w)``:
the kernel (:func:`kernels.banded.kernel.triton_banded_linear`) against ``F.linear`` on the dense weight
``W ⊙ M`` (cuBLAS, which computes every entry, zeros included). Two ops: the forward alone
(``banded_matmul_fwd``, under ``torch.no_grad``) and the forward with the backward pass, dX, dW and db
(``banded_matmul_fwd_bwd``, ``torch.autograd.grad``). Shapes: GPT-2 small's MLP (768 -> 3072 and 3072 -> 768)
and a LLaMA-7B-wide one with r = 4 (4096 -> 16384); fp16 and bf16; band densities near 0.44, 0.24 and 0.12
(the even band width whose ``banded_mask`` density is nearest; the achieved density, ``band_density`` of that
mask, is reported), and density 1.0, every entry kept: the same FLOPs as cuBLAS, so its speedup is the kernel's
matmul loop against cuBLAS's, the ceiling of the banded rows. The target is a speedup of ``0.7 / density``.
The forward is timed without autograd, as at inference: ``W ⊙ M`` is made once and kept
(:meth:`~kernels.banded.kernel.BandRanges.kept_weight`); forward + backward makes it in the forward and again
for dX, as training does.

How. :func:`kernels.runtime.compare` (CUDA events, the L2 flushed before every repetition, warm-up calls first,
which also run Triton's autotuning; each side replayed from a CUDA graph, so the host's launch overhead is not
timed, and its eager time reported beside) gives the median of ``reps`` calls of each side. ``max_err`` is the largest
absolute difference of the kernel's results (y; and dx, dW for fwd_bwd) from fp32 masked dense of the same
rounded inputs, each divided by the largest magnitude of that result: a scale-free figure, about 2^-8 for bf16
rounding. The caller checks for CUDA, adds the device, versions and git SHA, and writes the CSV.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from kernels.banded.kernel import band_ranges, triton_banded_linear
from kernels.runtime import compare
from lib.pruning.patterns import band_density, band_width_for, banded_mask

TOKENS = 4096
DENSITIES = (1.0, 0.44, 0.24, 0.12)  # 1.0: every entry kept (a general mask), the ceiling of the kernel's loop
SHAPES = {  # name -> (in_features, out_features)
    "gpt2-small fc1": (768, 3072),
    "gpt2-small fc2": (3072, 768),
    "llama-7b-wide fc1": (4096, 16384),
}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
DEVICE = "cuda"


def _max_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.float() - ref).abs().max() / ref.abs().max().clamp(min=1e-30))


def _bench(name: str, dtype_name: str, density: float, reps: int, warmup: int) -> list[dict]:
    in_features, out_features = SHAPES[name]
    dtype = DTYPES[dtype_name]
    if density < 1:
        width, _ = band_width_for(out_features, in_features, density)
        mask = banded_mask(out_features, in_features, width)
        achieved = band_density(mask)
    else:  # the whole matrix kept: the kernel's matmul loop against cuBLAS on the same FLOPs
        width, mask, achieved = 0, torch.ones(out_features, in_features, dtype=torch.bool), 1.0
    mask = mask.to(DEVICE)
    ranges = band_ranges(mask)
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(TOKENS, in_features, device=DEVICE, generator=gen).to(dtype)
    weight = (torch.randn(out_features, in_features, device=DEVICE, generator=gen) / in_features**0.5).to(dtype)
    bias = torch.randn(out_features, device=DEVICE, generator=gen).to(dtype)
    dy = torch.randn(TOKENS, out_features, device=DEVICE, generator=gen).to(dtype)
    dense_weight = weight * mask  # cuBLAS's operand: the band, zeros elsewhere

    # fp32 masked dense of the same rounded inputs: the reference for max_err
    leaves = [t.float().requires_grad_() for t in (x, weight, bias)]
    ref = F.linear(leaves[0], leaves[1] * mask, leaves[2])
    ref_dx, ref_dw, _ = torch.autograd.grad(ref, leaves, dy.float())
    ref_dw = ref_dw * mask

    shape = f"{name} {TOKENS}x{in_features}->{out_features}"
    common = {"shape": shape, "dtype": dtype_name, "bandwidth": width, "density": round(achieved, 4)}
    target = round(0.7 / achieved, 3)
    rows = []

    # forward
    with torch.no_grad():
        y = triton_banded_linear(x, weight, bias, ranges)
        err = _max_err(y, ref.detach())
        timed = compare(lambda: F.linear(x, dense_weight, bias), lambda: triton_banded_linear(x, weight, bias, ranges),
                        reps, warmup)  # fmt: skip
    rows.append({"op": "banded_matmul_fwd", **common, **timed, "target": target, "max_err": float(f"{err:.3g}")})

    # forward + backward (dX, dW, db)
    xk, wk, bk = (t.detach().requires_grad_() for t in (x, weight, bias))
    wd = dense_weight.detach().requires_grad_()

    def kernel_step():
        return torch.autograd.grad(triton_banded_linear(xk, wk, bk, ranges), (xk, wk, bk), dy)

    def dense_step():
        return torch.autograd.grad(F.linear(xk, wd, bk), (xk, wd, bk), dy)

    y = triton_banded_linear(xk, wk, bk, ranges)
    dx, dw, _ = torch.autograd.grad(y, (xk, wk, bk), dy)
    err = max(_max_err(y.detach(), ref.detach()), _max_err(dx, ref_dx), _max_err(dw, ref_dw))
    assert not dw[~mask].any(), "dW is not zero outside the band"
    timed = compare(dense_step, kernel_step, reps, warmup)
    rows.append({"op": "banded_matmul_fwd_bwd", **common, **timed, "target": target, "max_err": float(f"{err:.3g}")})
    return rows


def gpu_rows(quick: bool = False) -> list[dict]:
    """Rows (op, shape, dtype, bandwidth, density, dense_ms, kernel_ms, speedup, target, max_err) for every
    shape, dtype and density; ``quick``: fp16 only, 10 repetitions. CUDA only: the caller checks."""
    if not torch.cuda.is_available():
        raise RuntimeError("the banded kernel's GPU benchmark needs CUDA")
    reps, warmup = (10, 3) if quick else (50, 10)
    dtypes = ["fp16"] if quick else list(DTYPES)
    return [
        row
        for name in SHAPES
        for dtype_name in dtypes
        for density in DENSITIES
        for row in _bench(name, dtype_name, density, reps, warmup)
    ]
