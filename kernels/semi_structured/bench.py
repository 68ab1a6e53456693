"""2:4 semi-structured Linear against dense ``F.linear`` on the GPU (CUDA only: the caller checks).

Each row is one Linear without bias in fp16: a weight pruned to 2:4 by ``|W|`` (:func:`nm_mask`), multiplied
densely (``F.linear`` with the zeros in place) and through :func:`to_semi_structured` (cuSPARSELt, or CUTLASS),
on the same input; each timed with :func:`kernels.runtime.compare` (CUDA events, L2 flushed before every
call, CUDA graph replay where the sparse tensor's dispatch can be captured; eager beside) and reported as the
median. Shapes: LLaMA-7B-sized projections (4096 -> 4096, 4096 -> 11008, 11008 -> 4096) at 4096 tokens
(prefill, compute-bound) and 1 token (decoding, bound by reading the weight). The issue expects
about 1.1-1.4x on such Linears; the target column is 1.0 (faster than dense), and only the measured speedup is
claimed.
"""

from __future__ import annotations

import torch
from torch import nn

from kernels.runtime import compare
from lib.pruning.patterns import nm_mask, to_semi_structured

TOKENS = (4096, 1)
FEATURES = ((4096, 4096), (4096, 11008), (11008, 4096))  # (in, out)
NOTE = "issue expects ~1.1-1.4x; target 1.0 = faster than dense F.linear"


def bench(tokens: int, in_features: int, out_features: int, reps: int, warmup: int) -> dict:
    gen = torch.Generator(device="cuda").manual_seed(0)
    linear = nn.Linear(in_features, out_features, bias=False, device="cuda", dtype=torch.float16)
    x = torch.randn(tokens, in_features, device="cuda", dtype=torch.float16, generator=gen)
    with torch.no_grad():
        linear.weight.mul_(nm_mask(linear.weight.abs(), 2, 4))
        dense_weight = linear.weight.detach().clone()  # (out, in), half of it zeros
        to_semi_structured(linear)
        timed = compare(lambda: nn.functional.linear(x, dense_weight), lambda: linear(x), reps, warmup)
        err = (linear(x).float() - nn.functional.linear(x, dense_weight).float()).abs().max().item()
    return {
        "op": "semi_structured_2_4",
        "shape": f"{tokens}x{in_features}->{out_features}",
        "dtype": "float16",
        "density": 0.5,
        **timed,
        "target": 1.0,
        "note": NOTE,
        "max_err": err,
    }


def gpu_rows(quick: bool = False) -> list[dict]:
    """One row per (tokens, shape); ``quick`` times 10 calls after 3 warm-up calls instead of 50 after 10."""
    reps, warmup = (10, 3) if quick else (50, 10)
    return [bench(t, i, o, reps, warmup) for t in TOKENS for i, o in FEATURES]
