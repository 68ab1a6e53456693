"""The CUDA banded forward (``banded.cu``) against dense cuBLAS ``F.linear`` on the GPU (CUDA only: the caller checks).

Each row is one GPT-2 small MLP Linear with bias in fp16 at 4096 tokens, FC1 (768 -> 3072) and FC2 (3072 -> 768),
its weight masked to the band whose density is nearest 0.44, 0.24 and 0.12 (the achieved density is reported):
dense is ``F.linear`` on the masked weight (the zeros in place, tensor cores), the kernel is
:func:`kernels.banded.cuda.cuda_banded_forward` on the same input, weight and bias; each timed with
:func:`kernels.runtime.compare` (CUDA events, L2 flushed before every call, CUDA graph replay; eager beside)
and reported as the median.
``max_err`` is the kernel's largest absolute difference from masked dense computed in fp64 on the same fp16
inputs. The target is ``0.7 / density``; the kernel runs fp32 FMAs without tensor cores, so only the measured
speedup is claimed.
"""

from __future__ import annotations

import torch
from torch import nn

from kernels.banded.cuda import cuda_banded_forward, load, ranges_from_mask
from kernels.runtime import compare
from lib.pruning.patterns import band_width_for, banded_mask

TOKENS = 4096
FEATURES = {"fc1": (768, 3072), "fc2": (3072, 768)}  # (in, out)
DENSITIES = (0.44, 0.24, 0.12)


@torch.no_grad()
def bench(fc: str, density: float, reps: int, warmup: int) -> dict:
    in_features, out_features = FEATURES[fc]
    width, achieved = band_width_for(out_features, in_features, density)
    gen = torch.Generator(device="cuda").manual_seed(0)
    linear = nn.Linear(in_features, out_features, device="cuda", dtype=torch.float16)
    mask = banded_mask(out_features, in_features, width).cuda()
    linear.weight.mul_(mask)  # (out, in), zeros outside the band
    weight, bias = linear.weight, linear.bias
    x = torch.randn(TOKENS, in_features, device="cuda", dtype=torch.float16, generator=gen)
    ranges = ranges_from_mask(mask)  # host work, once per mask: outside the timed calls
    dense, kernel = nn.functional.linear, cuda_banded_forward
    timed = compare(lambda: dense(x, weight, bias), lambda: kernel(x, weight, bias, ranges), reps, warmup)
    expected = x.double() @ weight.double().T + bias.double()
    err = (cuda_banded_forward(x, weight, bias, ranges).double() - expected).abs().max().item()
    return {
        "op": "banded_matmul_fwd_cuda",
        "shape": f"{fc} {TOKENS}x{in_features}->{out_features}",
        "dtype": "float16",
        "density": round(achieved, 4),
        **timed,
        "target": round(0.7 / achieved, 3),
        "max_err": err,
    }


def gpu_rows(quick: bool = False) -> list[dict]:
    """One row per (FC1/FC2, density); ``quick`` times 10 calls after 3 warm-up calls instead of 50 after 10.
    Builds the extension first (minutes on a fresh machine), so no build lands in a timed call."""
    load()
    reps, warmup = (10, 3) if quick else (50, 10)
    return [bench(fc, d, reps, warmup) for fc in FEATURES for d in DENSITIES]
