"""KV compression by PCA: each head's values (and optionally keys) projected onto the top ``rank`` principal
directions of their calibration distribution, so the cache holds ``rank`` numbers per head and token instead of
the head dimension. Pure PyTorch; the math of :class:`kernels.kv_compress.KVCompressKernel`.

For one head with calibration vectors ``x`` (N, d): mean ``μ`` and the eigenvectors of the covariance
``(x − μ)ᵀ(x − μ) / N`` of the ``rank`` largest eigenvalues, ``P`` (d, rank). A vector is stored as its code
``c = (x − μ) P`` and read back as ``x̂ = c Pᵀ + μ``: the rank-``rank`` least-squares reconstruction (PCA).

Monotone spline + PCA (``KV_COMPRESS_METHOD_SPLINE_PCA``; the published "KVSplice" idea: warp each dimension
by a monotone spline so the data lies closer to a linear subspace, then PCA): each dimension ``j`` of a head
first goes through a strictly increasing piecewise-linear map ``f_j``, the code is the PCA code of ``f(x)``, and
a vector is read back as ``f⁻¹(c Pᵀ + μ)``. ``f_j`` blends the identity with the map that gives dimension ``j``
a Gaussian marginal of its own mean and spread (knots at the calibration quantiles): ``(1 − λ)·x + λ·g_j(x)``,
λ per head from :data:`BLENDS`, chosen by the round-trip error on the calibration data. λ = 0 is plain PCA, so
the variant is never worse than PCA on the data it was calibrated on. The cache holds the same ``rank`` numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lib.registry import Registry


@dataclass(frozen=True)
class Basis:
    """The PCA of one projection (keys or values) of one layer, per head: ``mean`` (nh, d), ``axes`` (nh, d, r)."""

    mean: torch.Tensor
    axes: torch.Tensor

    @property
    def rank(self) -> int:
        return self.axes.shape[-1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, nh, T, d) -> codes (B, nh, T, r)."""
        return (x - self.mean[:, None, :]) @ self.axes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, nh, T, r) -> (B, nh, T, d)."""
        return codes @ self.axes.transpose(-1, -2) + self.mean[:, None, :]

    def to(self, device: torch.device | str) -> Basis:
        return Basis(self.mean.to(device), self.axes.to(device))


def fit(x: torch.Tensor, rank: int) -> Basis:
    """The PCA basis of ``x`` (nh, N, d) per head, in float64 then cast back to ``x``'s dtype."""
    nh, n, d = x.shape
    if not 1 <= rank <= d:
        raise ValueError(f"rank {rank}: between 1 and the head dimension {d}")
    xd = x.double()
    mean = xd.mean(dim=1)  # (nh, d)
    centered = xd - mean[:, None, :]
    cov = centered.transpose(1, 2) @ centered / max(n, 1)  # (nh, d, d)
    _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
    axes = vectors.flip(-1)[..., :rank]  # the rank largest
    return Basis(mean.to(x.dtype), axes.to(x.dtype))


def relative_error(x: torch.Tensor, basis: Basis | SplineBasis) -> float:
    """‖x − decode(encode(x))‖ / ‖x‖ over (B, nh, T, d) vectors: the round trip's relative error."""
    back = basis.decode(basis.encode(x))
    return float((x - back).norm() / x.norm().clamp(min=1e-30))


# --------------------------------------------------------------------------- monotone spline + PCA


@dataclass(frozen=True)
class MonotoneSpline:
    """A strictly increasing piecewise-linear map per head and dimension, through knots ``xs`` -> ``ys``
    (nh, d, K + 1), each row strictly increasing, continued linearly beyond the end knots by the end segments.
    Exactly invertible: :meth:`inverse` interpolates the same knots the other way."""

    xs: torch.Tensor
    ys: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, nh, T, d) -> (B, nh, T, d)."""
        return _interpolate(x, self.xs, self.ys)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return _interpolate(y, self.ys, self.xs)

    def to(self, device: torch.device | str) -> MonotoneSpline:
        return MonotoneSpline(self.xs.to(device), self.ys.to(device))


def _interpolate(x: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of (B, nh, T, d) ``x`` through knots (nh, d, K + 1), per head and dimension;
    outside the knots, the end segments' lines."""
    b, nh, t, d = x.shape
    flat = x.permute(1, 3, 0, 2).reshape(nh, d, b * t).to(xs.dtype).contiguous()
    right = torch.searchsorted(xs, flat).clamp(1, xs.shape[-1] - 1)  # the segment [right - 1, right]
    x0, x1 = xs.gather(-1, right - 1), xs.gather(-1, right)
    y0, y1 = ys.gather(-1, right - 1), ys.gather(-1, right)
    out = y0 + (flat - x0) * (y1 - y0) / (x1 - x0)
    return out.reshape(nh, d, b, t).permute(2, 0, 3, 1).to(x.dtype)


@dataclass(frozen=True)
class SplineBasis:
    """Monotone spline, then PCA: a vector is stored as the PCA code of ``spline(x)`` and read back as
    ``spline⁻¹(decode(code))``. The cache holds the same ``rank`` numbers per head and token as plain PCA."""

    spline: MonotoneSpline
    pca: Basis
    blend: torch.Tensor  # (nh,) the chosen λ of each head (0: plain PCA)

    @property
    def rank(self) -> int:
        return self.pca.rank

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.pca.encode(self.spline(x))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.spline.inverse(self.pca.decode(codes))

    def to(self, device: torch.device | str) -> SplineBasis:
        return SplineBasis(self.spline.to(device), self.pca.to(device), self.blend.to(device))

    def cast(self, dtype: torch.dtype) -> SplineBasis:
        """The same maps in ``dtype`` (the knots at least float32: interpolation in half precision is coarse)."""
        knots = torch.promote_types(dtype, torch.float32)
        spline = MonotoneSpline(self.spline.xs.to(knots), self.spline.ys.to(knots))
        return SplineBasis(spline, Basis(self.pca.mean.to(dtype), self.pca.axes.to(dtype)), self.blend)


# The spline's family: λ · (the map that gives each dimension a Gaussian marginal of its own mean and spread)
# + (1 − λ) · identity, λ per head from this grid; λ = 0 is plain PCA, so on its calibration data the spline
# variant is never worse than PCA.
BLENDS = (0.0, 0.25, 0.5, 0.75, 1.0)
TAIL = 1e-3  # the end knots sit at these quantiles of the calibration data


def gaussianizing_knots(x: torch.Tensor, knots: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Knots (nh, d, knots + 1) of the monotone map that sends each dimension of ``x`` (nh, N, d, float64) to a
    Gaussian of the same mean and standard deviation: at quantile levels q from TAIL to 1 − TAIL, the data's
    quantiles ``xs`` and the Gaussian's ``μ + σ·Φ⁻¹(q)``. Tied quantiles (a dimension with few distinct values)
    are pulled apart by a gap of 1e-4·σ + 1e-6·(|μ| + 1), so both rows stay strictly increasing in float32."""
    levels = torch.linspace(TAIL, 1 - TAIL, knots + 1, dtype=torch.float64)
    xs = torch.quantile(x, levels, dim=1).permute(1, 2, 0)  # (nh, d, K + 1)
    mean, std = x.mean(dim=1)[..., None], x.std(dim=1)[..., None]  # (nh, d, 1)
    gap = 1e-4 * std + 1e-6 * (mean.abs() + 1)
    steps = torch.cat([torch.zeros_like(xs[..., :1]), (xs.diff(dim=-1)).clamp(min=0).maximum(gap)], dim=-1)
    xs = xs[..., :1] + steps.cumsum(dim=-1)
    normal = math.sqrt(2) * torch.erfinv(2 * levels - 1)  # Φ⁻¹(q)
    gauss = mean + std.maximum(gap) * normal
    return xs, gauss


def fit_spline(x: torch.Tensor, rank: int, knots: int = 16) -> SplineBasis:
    """Monotone spline + PCA of ``x`` (nh, N, d) per head: for each λ of :data:`BLENDS`, the spline through
    :func:`gaussianizing_knots` blended with the identity, PCA of the transformed data, and the round-trip error
    on ``x``; each head keeps the λ of its smallest error."""
    nh, n, d = x.shape
    if not 1 <= rank <= d:
        raise ValueError(f"rank {rank}: between 1 and the head dimension {d}")
    if knots < 2:
        raise ValueError(f"knots {knots}: at least 2")
    xd = x.double()
    xs, gauss = gaussianizing_knots(xd, knots)
    candidates, errors = [], []
    for blend in BLENDS:
        spline = MonotoneSpline(xs, (1 - blend) * xs + blend * gauss)
        z = spline(xd[None])  # the warped data, once: encode would warp it again
        pca = fit(z[0], rank)
        back = spline.inverse(pca.decode(pca.encode(z)))[0]
        basis = SplineBasis(spline, pca, torch.full((nh,), blend, dtype=torch.float64))
        candidates.append(basis)
        errors.append(((xd - back) ** 2).sum(dim=(1, 2)))  # (nh,)
    best = torch.stack(errors).argmin(dim=0)  # (nh,)
    heads = torch.arange(nh)

    def pick(field: Callable[[SplineBasis], torch.Tensor]) -> torch.Tensor:  # each head's tensor of its best λ
        return torch.stack([field(c) for c in candidates])[best, heads]

    ys = pick(lambda c: c.spline.ys)
    pca = Basis(pick(lambda c: c.pca.mean), pick(lambda c: c.pca.axes))
    blends = torch.tensor(BLENDS, dtype=torch.float64)[best]
    return SplineBasis(MonotoneSpline(xs, ys), pca, blends).cast(x.dtype)


# KV_COMPRESS_METHOD: how a projection's vectors are fitted, (x (nh, N, d), rank, knots) -> a basis
METHODS: Registry[Callable[[torch.Tensor, int, int], Basis | SplineBasis]] = Registry(
    "KV compression method (KV_COMPRESS_METHOD)", "KV_COMPRESS_METHOD"
)
METHODS.register("pca")(lambda x, rank, knots: fit(x, rank))
METHODS.register("spline_pca")(fit_spline)
