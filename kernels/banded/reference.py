"""Block-banded linear in pure PyTorch: ``y = x (W ⊙ M)ᵀ + b`` computing only the tiles that meet the band.

The banded masks of :func:`lib.pruning.patterns.banded_mask` keep, for FC1 (weight (rC, C)), the entries
``|j - i·r| <= bandwidth / 2`` (output ``j``, input ``i``) and for FC2 (weight (C, rC)) the transpose. Each of
the three products of a Linear's training step writes one matrix and reduces over another, and each is cut
into tiles along the side it writes:

    forward   yᵀ = (W ⊙ M) xᵀ       tiles of output rows,  each reading a window of xᵀ's rows   (input channels)
    backward  dxᵀ = (W ⊙ M)ᵀ dyᵀ    tiles of input rows,   each reading a window of dyᵀ's rows  (output channels)
              dW = (dyᵀ x) ⊙ M      the forward's tiles: (rows of dyᵀ) @ (window of xᵀ)ᵀ, band entries kept

(tokens last: ``xᵀ`` and ``dyᵀ`` are (channels, M), so a window of channels is a block of contiguous rows).
A band has the same shape in every tile, so the windows start at a fixed stride, ``rows · in / out`` channels
apart: with the input padded by zero rows at both ends, the windows of all tiles are one overlapping
``as_strided`` view of it (no copy), and each product is one ``torch.bmm`` of the tiles' blocks
``(T, rows, width)`` against that view ``(T, width, M)``. Nothing is gathered per token: the only copies are
the band's weights into blocks (and dW's band back out of them) and one transposed, padded copy of x and dy.

FLOPs are ``2·M·T·rows·width`` per product instead of ``2·M·out·in``: the band's density times the tiles'
overhead ``(tile extent + band width) / band width`` on the wide side. So the tile is sized on the wide side
(``block`` wide channels: FC1's forward tiles ``block`` output rows, its backward ``block / r`` input rows;
FC2 the other way round). Small tiles waste less of the band, large ones run faster GEMMs.

Nothing here assumes the band formula: a :class:`TilePlan` is built from the mask itself (its windows are the
smallest fixed-stride windows that cover every tile's kept entries), so it is exact for any mask and
efficient for banded ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TilePlan:
    """The tiling of one product, for a (rows_total, cols_total) mask whose rows are the side it writes.

    ``tiles`` tiles of ``rows`` rows each read a window of ``width`` rows of the other operand, tile ``t``'s
    from ``base + t·stride`` on, moved inside the operand where it would reach past either end. The tiles
    ``first <= t < stop`` (full, their window inside the operand) go through one batched product of strided
    views; the others form ``groups`` (first row, rows, window start) of consecutive tiles whose moved windows
    coincide (at either end), one product each."""

    rows_total: int
    cols_total: int
    rows: int
    tiles: int
    width: int
    stride: int
    base: int
    first: int
    stop: int
    groups: tuple[tuple[int, int, int], ...]

    @property
    def density(self) -> float:
        """Fraction of the dense product's FLOPs the tiles compute."""
        rows = (self.stop - self.first) * self.rows + sum(n for _, n, _ in self.groups)
        return rows * self.width / (self.rows_total * self.cols_total)


def tile_rows(rows_total: int, cols_total: int, block: int) -> int:
    """Rows per tile for a tile ``block`` channels long on the wide side: ``block`` when the tiled side is
    the wide one, ``block / r`` when it is the narrow one."""
    if rows_total >= cols_total:
        return max(1, min(block, rows_total))
    ratio = max(1, cols_total // rows_total)
    return max(1, min(block // ratio, rows_total))


@torch.no_grad()
def tile_plan(mask: torch.Tensor, block: int) -> TilePlan:
    """The tiling of ``mask`` (bool (rows_total, cols_total), rows: the side the product writes) for tiles
    ``block`` channels long on the wide side: the narrowest fixed-stride windows that hold every tile's kept
    entries. A window moved inward at an end still holds them: they lie inside the operand, and inside the
    unmoved window."""
    rows_total, cols_total = mask.shape
    rows = tile_rows(rows_total, cols_total, block)
    tiles = -(-rows_total // rows)
    stride = max(1, round(rows * cols_total / rows_total))  # a band advances this many columns per tile
    j, i = mask.nonzero(as_tuple=True)  # kept entries: row j, column i
    shifted = i - (j // rows) * stride  # each entry's column relative to its tile's window (before the base)
    base, width = (int(shifted.min()), int(shifted.max() - shifted.min()) + 1) if len(i) else (0, 1)
    width = min(width, cols_total)
    starts = [base + t * stride for t in range(tiles)]
    inside = [t for t in range(rows_total // rows) if 0 <= starts[t] <= cols_total - width]
    first, stop = (inside[0], inside[-1] + 1) if inside else (0, 0)
    groups: list[list[int]] = []  # [first row, rows, start] of runs of tiles outside [first, stop)
    for t in (t for t in range(tiles) if not first <= t < stop):
        start = min(max(starts[t], 0), cols_total - width)
        n = min(rows, rows_total - t * rows)
        if groups and groups[-1][2] == start and groups[-1][0] + groups[-1][1] == t * rows:
            groups[-1][1] += n
        else:
            groups.append([t * rows, n, start])
    return TilePlan(
        rows_total, cols_total, rows, tiles, width, stride, base, first, stop, tuple(tuple(g) for g in groups)
    )


class TwoTilings:
    """A plan of one (out, in) mask's two tilings, ``fwd`` over output rows (forward and dW) and ``bwd`` over
    input rows (dX, the transposed mask), each with ``rows_total``, ``cols_total`` and ``density``: what both
    CPU paths' plans (:class:`BandPlan`, :class:`kernels.banded.cpu.CpuPlan`) know from them."""

    fwd: Any
    bwd: Any

    @property
    def out_features(self) -> int:
        return self.fwd.rows_total

    @property
    def in_features(self) -> int:
        return self.fwd.cols_total

    @property
    def density(self) -> float:
        """Fraction of the dense step's FLOPs the three products compute (forward and dW on the forward
        tiles, dX on the backward ones)."""
        return (2 * self.fwd.density + self.bwd.density) / 3


@dataclass(frozen=True)
class BandPlan(TwoTilings):
    """The reference's tilings of one (out, in) ``mask``."""

    fwd: TilePlan
    bwd: TilePlan
    mask: torch.Tensor  # bool (out, in)
    outside: torch.Tensor  # ~mask

    def to(self, device: torch.device) -> BandPlan:
        return BandPlan(self.fwd, self.bwd, self.mask.to(device), self.outside.to(device))


@torch.no_grad()
def plan(mask: torch.Tensor, block: int) -> BandPlan:
    """The forward and backward tilings of ``mask`` (bool (out, in)) for tiles ``block`` wide-side channels long."""
    mask = mask.detach().to(torch.bool)
    cpu = mask.cpu()
    return BandPlan(tile_plan(cpu, block), tile_plan(cpu.t(), block), mask, ~mask)


def blocks(a: torch.Tensor, p: TilePlan) -> torch.Tensor:
    """(stop - first, rows, width): the full inside tiles' blocks of ``a`` ((rows_total, cols_total), any
    strides: the weight or its transpose), a strided view (no copy)."""
    rs, cs = a.stride()
    start = a.storage_offset() + p.first * p.rows * rs + (p.base + p.first * p.stride) * cs
    return a.as_strided((p.stop - p.first, p.rows, p.width), (p.rows * rs + p.stride * cs, rs, cs), start)


def windows(at: torch.Tensor, p: TilePlan) -> torch.Tensor:
    """(stop - first, width, M): the full inside tiles' windows of ``at`` ((cols_total, M), contiguous), an
    overlapping view (no copy)."""
    m = at.shape[1]
    start = at.storage_offset() + (p.base + p.first * p.stride) * m
    return at.as_strided((p.stop - p.first, p.width, m), (p.stride * m, m, 1), start)


def tokens_last(a: torch.Tensor) -> torch.Tensor:
    """``aᵀ`` (a: (M, n)) as a contiguous (n, M) matrix: free when ``a`` is the transposed view a banded layer
    returns (through elementwise ops, which keep the layout), one copy otherwise."""
    return a.t().contiguous()


def tiled_product(a: torch.Tensor, bt: torch.Tensor, p: TilePlan) -> torch.Tensor:
    """(M, rows_total): ``(a ⋅ bt)ᵀ`` over the tiles, ``a`` (rows_total, cols_total) zero outside the band,
    ``bt`` (cols_total, M) contiguous; a transposed view of a contiguous (rows_total, M) result."""
    m = bt.shape[1]
    out = bt.new_empty(p.rows_total, m)
    if p.stop > p.first:
        inside = out[p.first * p.rows : p.stop * p.rows].view(p.stop - p.first, p.rows, m)
        torch.bmm(blocks(a, p), windows(bt, p), out=inside)
    for r0, n, c0 in p.groups:
        torch.mm(a[r0 : r0 + n, c0 : c0 + p.width], bt[c0 : c0 + p.width], out=out[r0 : r0 + n])
    return out.t()


def banded_forward(
    x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: BandPlan
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x2`` (M, in) -> ``y`` (M, out) (a transposed view: tokens last in memory, as the next banded layer
    reads it), and ``xᵀ`` and ``W ⊙ M`` for the backward pass."""
    xt = tokens_last(x2)
    wm = torch.where(p.mask, weight, 0)
    y = tiled_product(wm, xt, p.fwd)
    if bias is not None:
        y = y.add_(bias)  # in place on the fresh product: keeps its layout
    return y, xt, wm


def banded_backward(
    dy2: torch.Tensor, xt: torch.Tensor, wm: torch.Tensor, p: BandPlan, need: tuple[bool, bool, bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients (dx2 (M, in), dW (out, in) zero outside the band, db (out,)) from ``dy2`` (M, out)."""
    dx = dw = db = None
    dyt = tokens_last(dy2)  # (out, M)
    if need[0]:
        dx = tiled_product(wm.t(), dyt, p.bwd)
    if need[1]:
        f, m = p.fwd, dyt.shape[1]
        dw = dy2.new_empty(f.rows_total, f.cols_total)
        if f.stop > f.first:
            rows = dyt[f.first * f.rows : f.stop * f.rows].view(f.stop - f.first, f.rows, m)
            blocks(dw, f).copy_(torch.bmm(rows, windows(xt, f).transpose(1, 2)))  # (T, rows, width)
        for r0, n, c0 in f.groups:
            torch.mm(dyt[r0 : r0 + n], xt[c0 : c0 + f.width].t(), out=dw[r0 : r0 + n, c0 : c0 + f.width])
        dw.masked_fill_(p.outside, 0)  # exactly zero outside the band (and nothing unwritten survives)
    if need[2]:
        db = dy2.sum(0)
    return dx, dw, db


class BandedLinearFunction(torch.autograd.Function):
    """``x (W ⊙ M)ᵀ + b`` over the tiles of a :class:`BandPlan`; ``x`` of any shape (..., in)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: BandPlan) -> torch.Tensor:
        lead = x.shape[:-1]
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        # Under autocast the input may be narrower than the weights: compute in the input's dtype.
        weight, bias = weight.to(x.dtype), None if bias is None else bias.to(x.dtype)
        y, xt, wm = banded_forward(x.reshape(-1, x.shape[-1]), weight, bias, p)
        ctx.save_for_backward(xt, wm)
        ctx.plan, ctx.lead, ctx.has_bias = p, lead, bias is not None
        return y.reshape(*lead, p.out_features)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        xt, wm = ctx.saved_tensors
        p = ctx.plan
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2])
        dx, dw, db = banded_backward(dy.reshape(-1, p.out_features), xt, wm, p, need)
        if dx is not None:
            dx = dx.reshape(*ctx.lead, p.in_features)
        dw = None if dw is None else dw.to(ctx.dtypes[0])
        db = None if db is None else db.to(ctx.dtypes[1])
        return dx, dw, db, None


def banded_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: BandPlan) -> torch.Tensor:
    return BandedLinearFunction.apply(x, weight, bias, p)
