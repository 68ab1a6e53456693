"""KV compression by PCA: each head's values (and optionally keys) projected onto the top ``rank`` principal
directions of their calibration distribution, so the cache holds ``rank`` numbers per head and token instead of
the head dimension. Pure PyTorch; the math of :class:`kernels.kv_compress.KVCompressKernel`.

For one head with calibration vectors ``x`` (N, d): mean ``μ`` and the eigenvectors of the covariance
``(x − μ)ᵀ(x − μ) / N`` of the ``rank`` largest eigenvalues, ``P`` (d, rank). A vector is stored as its code
``c = (x − μ) P`` and read back as ``x̂ = c Pᵀ + μ``: the rank-``rank`` least-squares reconstruction (PCA).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def relative_error(x: torch.Tensor, basis: Basis) -> float:
    """‖x − decode(encode(x))‖ / ‖x‖ over (B, nh, T, d) vectors: the round trip's relative error."""
    back = basis.decode(basis.encode(x))
    return float((x - back).norm() / x.norm().clamp(min=1e-30))
