"""Structured sparsity patterns as pure functions on tensors: N:M (2:4) masks and banded MLP masks.

N:M semi-structured sparsity (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks",
arXiv:2104.08378). A weight ``W`` of shape (out, in) -- convolution weights are viewed as
(out, in * kh * kw) -- is cut along each row into groups of ``M`` consecutive input-dimension entries,
``G[o, g] = W[o, g*M : (g+1)*M]``; in every group the ``N`` entries with the highest score are kept and
the other ``M - N`` pruned. For N:M = 2:4 this is the layout of NVIDIA Ampere's sparse tensor cores and of
``torch.sparse.to_sparse_semi_structured``, whose CUTLASS conversion
(``torch/sparse/_semi_structured_conversions.py``) reads a row-major (m, k) fp16/bf16 matrix as
``dense.view(-1, k // 4, 4)`` and encodes the two nonzeros of each quadruple: keep 2 of every 4 consecutive
elements along the last dimension. Gradual N:M schedules prune ``zeros`` = 0 .. M - N entries per group
(:func:`nm_mask_partial`); ``zeros = M - N`` is the full pattern.

Banded masks for transformer MLPs. FC1 maps C -> rC (weight (rC, C) = (out, in), r an integer >= 1); the band
lives on the wide side: input channel ``i`` connects to output channel ``j`` iff ``|j - i*r| <= bandwidth / 2``,
compared exactly as ``2 * |j - i*r| <= bandwidth`` (bandwidth counts channels on the wide side). FC2 maps
rC -> C (weight (C, rC)) and its mask is the transpose of FC1's for the same C, r and bandwidth:
``mask[i, j]`` (output ``i``, input ``j``) iff ``|j - i*r| <= bandwidth / 2``. Bandwidth 0 means dense.
Each narrow channel has ``bandwidth + 1`` wide neighbours for even bandwidth, ``bandwidth`` for odd (fewer at
the edges). A wide channel farther than bandwidth / 2 from every ``i*r`` connects to nothing: every wide
channel is connected iff bandwidth >= 2(r - 1), the distance of the last one, rC - 1, from (C - 1)r.

The contract with the pruners is the base's: a ``torch.bool`` mask (True = kept) the shape of the weight.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _groups(scores: torch.Tensor, m: int) -> torch.Tensor:
    """``scores`` viewed as (out, in_flat / m, m): groups of ``m`` consecutive entries along each flattened row."""
    if scores.dim() < 2:
        raise ValueError(f"N:M sparsity needs a weight of 2+ dims (out, in, ...), got shape {tuple(scores.shape)}")
    rows = scores.reshape(scores.shape[0], -1)  # (out, in * kh * kw)
    if rows.shape[1] % m:
        raise ValueError(
            f"N:M sparsity: weight of shape {tuple(scores.shape)} has {rows.shape[1]} inputs per output row, "
            f"not divisible by M={m}; exclude this layer or pick an M that divides {rows.shape[1]}"
        )
    return rows.reshape(rows.shape[0], -1, m)  # (out, in_flat / m, m)


def nm_mask_partial(scores: torch.Tensor, n: int, m: int, zeros: int) -> torch.Tensor:
    """Bool mask pruning the ``zeros`` lowest-scored entries of every group of ``m`` (0 <= zeros <= m - n).

    Groups are ``m`` consecutive entries along each output row of ``scores`` flattened to (out, -1). Ties are
    broken by position: among equal scores the lower index is kept first. NaN scores rank lowest.
    """
    if not 1 <= n <= m:
        raise ValueError(f"N:M sparsity needs 1 <= N <= M, got N={n}, M={m}")
    if not 0 <= zeros <= m - n:
        raise ValueError(f"N:M sparsity: zeros per group must be in 0..{m - n} for {n}:{m}, got {zeros}")
    groups = _groups(scores, m)
    # A stable descending sort keeps equal scores in index order, so the lower index ranks higher (kept first).
    ranked = groups.nan_to_num(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    order = torch.sort(ranked, dim=-1, descending=True, stable=True).indices  # (out, groups, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, order[..., : m - zeros], True)
    return keep.reshape(scores.shape)


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Bool N:M mask: in every group of ``m`` consecutive input-dimension entries keep the ``n`` highest scores.

    ``nm_mask(scores, 2, 4)`` is the 2:4 layout ``torch.sparse.to_sparse_semi_structured`` accepts. Raises
    ``ValueError`` when the flattened input dimension is not divisible by ``m``.
    """
    return nm_mask_partial(scores, n, m, zeros=m - n)


def banded_mask(out_features: int, in_features: int, bandwidth: int) -> torch.Tensor:
    """Bool (out_features, in_features) band mask for an MLP projection, the band on the wide side.

    FC1-like (out >= in, r = out / in): ``mask[j, i]`` iff ``2 * |j - i*r| <= bandwidth``. FC2-like (out < in):
    the transpose of ``banded_mask(in_features, out_features, bandwidth)``. Bandwidth 0 means dense. Raises
    ``ValueError`` when the wide side is not an integer multiple of the narrow side.
    """
    if out_features < 1 or in_features < 1:
        raise ValueError(f"banded mask: features must be positive, got shape ({out_features}, {in_features})")
    if bandwidth < 0:
        raise ValueError(f"banded mask: bandwidth must be >= 0 (0 = dense), got {bandwidth}")
    if bandwidth == 0:
        return torch.ones(out_features, in_features, dtype=torch.bool)
    wide, narrow = max(out_features, in_features), min(out_features, in_features)
    if wide % narrow:
        raise ValueError(
            f"banded mask: weight shape ({out_features}, {in_features}) has a non-integer ratio {wide}/{narrow}; "
            "the wide side must be a multiple of the narrow side"
        )
    if out_features < in_features:
        return banded_mask(in_features, out_features, bandwidth).t().contiguous()
    r = out_features // in_features
    j = torch.arange(out_features).unsqueeze(1)  # (out, 1): wide-side channel
    i = torch.arange(in_features).unsqueeze(0)  # (1, in): narrow-side channel
    # Integer arithmetic: the comparison with bandwidth / 2 is exact.
    return 2 * (j - i * r).abs() <= bandwidth  # (out, in)


def band_width_for(out_features: int, in_features: int, density: float) -> tuple[int, float]:
    """The even band width whose :func:`banded_mask` density is nearest ``density``, and that density. Counted
    per narrow channel ``i`` (it keeps the wide channels ``max(0, i·r - w/2) .. min(wide - 1, i·r + w/2)``)
    instead of building a mask per candidate, so it is fast for LLaMA-sized layers; an odd width keeps what the
    even width below it keeps."""
    wide, narrow = max(out_features, in_features), min(out_features, in_features)
    if wide % narrow:
        raise ValueError(f"band width: weight shape ({out_features}, {in_features}) has a non-integer ratio")
    centres = torch.arange(narrow, dtype=torch.int64) * (wide // narrow)

    def density_of(half: int) -> float:  # grows with half: a bisection finds the first at or above density
        return float(((centres + half).clamp(max=wide - 1) - (centres - half).clamp(min=0) + 1).sum()) / (wide * narrow)

    lo, hi = 1, wide - 1
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if density_of(mid) >= density else (mid + 1, hi)
    half = min((h for h in (lo - 1, lo) if h >= 1), key=lambda h: abs(density_of(h) - density))
    return 2 * half, density_of(half)


def band_density(mask: torch.Tensor) -> float:
    """Fraction of entries kept (True) in ``mask``."""
    return int(mask.count_nonzero()) / mask.numel() if mask.numel() else 0.0


def is_2_4(weight: torch.Tensor) -> bool:
    """At most 2 nonzeros in every group of 4 consecutive entries along each row of a 2-D weight: the layout
    ``torch.sparse.to_sparse_semi_structured`` compresses exactly."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return bool(((weight != 0).reshape(weight.shape[0], -1, 4).sum(-1) <= 2).all())  # (out, in/4, 4) -> (out, in/4)


SEMI_STRUCTURED_DTYPES = (torch.float16, torch.bfloat16)


class NotSemiStructured(ValueError):
    """A Linear :func:`to_semi_structured` cannot convert; the message says why and what would make it work."""


def semi_structured_unsupported(device: torch.device) -> str | None:
    """Why 2:4 semi-structured matmuls cannot run on ``device`` (not CUDA, or a GPU without sparse tensor cores:
    compute capability < 8.0), as one sentence; None when they can."""
    device = torch.device(device)
    need = "2:4 semi-structured Linears need a CUDA GPU with compute capability >= 8.0"
    if device.type != "cuda":
        return f"{need} (this run is on {device})"
    if not torch.cuda.is_available():
        return f"{need} (CUDA is not available to this process)"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"{need} ({device}, {torch.cuda.get_device_name(device)}, has compute capability {major}.{minor})"
    return None


def to_semi_structured(linear: nn.Linear, dtype: torch.dtype | None = None) -> nn.Linear:
    """Swap ``linear.weight`` for its 2:4 compressed form (``torch.sparse.to_sparse_semi_structured``), in place,
    and return the layer.

    For inference: the new weight is a frozen ``nn.Parameter`` (no gradients) that dispatches matmuls to the
    sparse tensor cores (cuSPARSELt, or CUTLASS). Needs a CUDA weight on a GPU of compute capability >= 8.0 that
    already holds a 2:4 pattern (:func:`is_2_4`; e.g. multiplied by :func:`nm_mask` with N:M = 2:4), in fp16 or
    bf16 -- or ``dtype``, one of those, which the weight and bias are cast to -- and a shape torch's kernels
    take (both sides multiples of a minimum tile, e.g. 32 x 64 for CUTLASS fp16). Raises
    :class:`NotSemiStructured` naming what does not hold; the layer is then unchanged.
    """
    weight = linear.weight
    dtype = dtype or weight.dtype
    if not weight.is_cuda:
        raise NotSemiStructured(
            f"2:4 semi-structured weights live on a CUDA GPU; this one is on {weight.device}: move the layer first"
        )
    unsupported = semi_structured_unsupported(weight.device)
    if unsupported:
        raise NotSemiStructured(unsupported)
    if dtype not in SEMI_STRUCTURED_DTYPES:
        raise NotSemiStructured(
            f"2:4 semi-structured weights are float16 or bfloat16, not {dtype}: pass dtype=torch.float16 (or bfloat16)"
        )
    if not is_2_4(weight):
        raise NotSemiStructured(
            f"weight of shape {tuple(weight.shape)} does not hold a 2:4 pattern (at most 2 nonzeros in every 4 "
            "consecutive inputs of a row): prune it with nm_mask(scores, 2, 4) first"
        )
    try:
        sparse = torch.sparse.to_sparse_semi_structured(weight.detach().to(dtype).contiguous())
    except RuntimeError as err:  # shape below or not a multiple of the kernel's minimum tile, or no backend
        raise NotSemiStructured(
            f"to_sparse_semi_structured refused the {dtype} weight of shape {tuple(weight.shape)}: {err}"
        ) from None
    linear.weight = nn.Parameter(sparse, requires_grad=False)
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.detach().to(dtype), requires_grad=False)
    return linear
