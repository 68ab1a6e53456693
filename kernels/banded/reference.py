"""Block-banded linear in pure PyTorch: ``y = x (W ⊙ M)ᵀ + b`` computing only the tiles that meet the band.

The banded masks of :func:`lib.pruning.patterns.banded_mask` keep, for FC1 (weight (rC, C)), the entries
``|j - i·r| <= bandwidth / 2`` (output ``j``, input ``i``) and for FC2 (weight (C, rC)) the transpose. Cut the
output dimension into tiles of ``rows`` consecutive rows; the band of one tile covers a contiguous range of
input columns, at most ``width`` wide (the widest tile's range; every tile reads ``width`` columns, its range
shifted inward at the edges). A tile then is one small dense GEMM, and the tiles go to one ``torch.bmm``:

    xg[t]     = xᵀ[cols[t]]                          # (T, width, M): the input channels tile t reads
    blocks[t] = (W ⊙ M)[rows of t][:, cols[t]]       # (T, rows, width): in-band entries only, zeros elsewhere
    yᵀ[rows of t] = blocks[t] @ xg[t]                # (T, rows, M)

(tokens last, so gathers copy contiguous rows and every GEMM reads contiguous memory) and the backward pass is
the same products the other way: ``dxg = blocks[t]ᵀ @ dyᵀ[rows of t]`` (added back with ``index_add_``: tiles
overlap in their columns), ``dblocks = dyᵀ[rows of t] @ xg[t]ᵀ`` of which only the in-band entries
are written into ``dW`` (exactly zero outside the band, as masked dense's gradient is once the pruner masks
it) and ``db = Σ dy``. FLOPs are ``2·M·T·rows·width`` per product instead of ``2·M·out·in``: they scale with
the band's density times the tiles' overhead ``(tile extent + band width) / band width``, measured on the
wide side. So the tile is sized on the wide side (``block`` wide channels): FC1 tiles ``block`` output rows,
FC2 ``block / r`` (its outputs are narrow). Small tiles waste less of the band, large ones run faster GEMMs.

Nothing here assumes the band formula: a :class:`BandPlan` is built from the mask itself (each tile's
columns are the span of its rows' kept entries), so it is exact for any mask and efficient for banded ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class BandPlan:
    """Where the band's tiles are, for one (out, in) mask: ``tiles`` tiles of ``rows`` output rows (the last
    padded), each reading ``width`` input columns ``cols[t]``; ``src`` / ``dst`` are the flat indices of the
    mask's kept entries in the weight (out·in) and in the tiles (tiles·rows·width)."""

    out_features: int
    in_features: int
    rows: int
    tiles: int
    width: int
    cols: torch.Tensor  # (tiles, width) int64
    src: torch.Tensor  # (nnz,) int64, into W.view(-1)
    dst: torch.Tensor  # (nnz,) int64, into blocks.view(-1)

    @property
    def density(self) -> float:
        """Fraction of the dense product's FLOPs the tiles compute (padding included)."""
        return self.tiles * self.rows * self.width / (self.out_features * self.in_features)

    def to(self, device: torch.device) -> BandPlan:
        move = {k: getattr(self, k).to(device) for k in ("cols", "src", "dst")}
        return BandPlan(self.out_features, self.in_features, self.rows, self.tiles, self.width, **move)


def tile_rows(out_features: int, in_features: int, block: int) -> int:
    """Output rows per tile for a tile ``block`` channels long on the wide side (FC1: outputs are wide)."""
    if out_features >= in_features:
        return max(1, min(block, out_features))
    ratio = max(1, in_features // out_features)
    return max(1, min(block // ratio, out_features))


@torch.no_grad()
def plan(mask: torch.Tensor, block: int) -> BandPlan:
    """The tiles of ``mask`` (bool (out, in)) for tiles ``block`` channels long on the wide side."""
    out_features, in_features = mask.shape
    rows = tile_rows(out_features, in_features, block)
    tiles = -(-out_features // rows)
    mask = mask.detach().to("cpu", torch.bool)
    j, i = mask.nonzero(as_tuple=True)  # kept entries: output j, input i
    t = j // rows
    lo = torch.full((tiles,), in_features, dtype=torch.long).scatter_reduce(0, t, i, "amin")
    hi = torch.full((tiles,), -1, dtype=torch.long).scatter_reduce(0, t, i, "amax")
    width = max(1, int((hi - lo + 1).clamp(min=1).max()) if len(i) else 1)
    start = lo.clamp(max=in_features - width).clamp(min=0)  # empty tiles (lo = in) read the last columns
    cols = start.unsqueeze(1) + torch.arange(width)  # (tiles, width)
    dst = (t * rows + j % rows) * width + (i - start[t])
    return BandPlan(out_features, in_features, rows, tiles, width, cols, j * in_features + i, dst)


def gather_blocks(weight: torch.Tensor, p: BandPlan) -> torch.Tensor:
    """(tiles, rows, width): the in-band entries of ``weight`` in their tiles, zeros elsewhere (so ``W ⊙ M``)."""
    blocks = weight.new_zeros(p.tiles * p.rows * p.width)
    blocks[p.dst] = weight.reshape(-1)[p.src]
    return blocks.view(p.tiles, p.rows, p.width)


def banded_forward(
    x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: BandPlan
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x2`` (M, in) -> ``y`` (M, out), with the gathered inputs and tiles the backward pass reuses.

    Tokens are the last (contiguous) dimension of every bmm operand: gathering input channels is then a
    gather of contiguous rows of ``xᵀ``, and each tile's GEMM is (rows, width) @ (width, M), one BLAS call
    per tile on contiguous memory."""
    m = x2.shape[0]
    blocks = gather_blocks(weight, p)  # (T, rows, width)
    xg = x2.t().contiguous()[p.cols.reshape(-1)].view(p.tiles, p.width, m)  # (T, width, M)
    yt = torch.bmm(blocks, xg)  # (T, rows, M)
    y = yt.view(p.tiles * p.rows, m)[: p.out_features].t()  # (M, out), a view
    y = y + bias if bias is not None else y.contiguous()
    return y, xg, blocks


def banded_backward(
    dy2: torch.Tensor, xg: torch.Tensor, blocks: torch.Tensor, p: BandPlan, need: tuple[bool, bool, bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients (dx2 (M, in), dW (out, in) zero outside the band, db (out,)) from ``dy2`` (M, out)."""
    m = dy2.shape[0]
    pad = p.tiles * p.rows - p.out_features
    dyt = dy2.t()  # (out, M)
    dyt = nn.functional.pad(dyt, (0, 0, 0, pad)) if pad else dyt.contiguous()
    dyt = dyt.view(p.tiles, p.rows, m)  # (T, rows, M)
    dx = dw = db = None
    if need[0]:
        dxg = torch.bmm(blocks.transpose(1, 2), dyt)  # (T, width, M)
        dxt = dy2.new_zeros(p.in_features, m)
        dxt.index_add_(0, p.cols.reshape(-1), dxg.view(p.tiles * p.width, m))
        dx = dxt.t()  # (M, in), a view
    if need[1]:
        dblocks = torch.bmm(dyt, xg.transpose(1, 2))  # (T, rows, width)
        dw = dy2.new_zeros(p.out_features * p.in_features)
        dw[p.src] = dblocks.reshape(-1)[p.dst]
        dw = dw.view(p.out_features, p.in_features)
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
        y, xg, blocks = banded_forward(x.reshape(-1, x.shape[-1]), weight, bias, p)
        ctx.save_for_backward(xg, blocks)
        ctx.plan, ctx.lead, ctx.has_bias = p, lead, bias is not None
        return y.reshape(*lead, p.out_features)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        xg, blocks = ctx.saved_tensors
        p = ctx.plan
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2])
        dx, dw, db = banded_backward(dy.reshape(-1, p.out_features), xg, blocks, p, need)
        if dx is not None:
            dx = dx.reshape(*ctx.lead, p.in_features)
        dw = None if dw is None else dw.to(ctx.dtypes[0])
        db = None if db is None else db.to(ctx.dtypes[1])
        return dx, dw, db, None


def banded_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: BandPlan) -> torch.Tensor:
    return BandedLinearFunction.apply(x, weight, bias, p)


class BandedLinear(nn.Module):
    """A masked ``nn.Linear`` computed over its band's tiles. Takes over the Linear's ``weight``, ``bias`` and
    ``weight_mask`` (the same tensors under the same names), so the optimizer, the pruner and checkpoints see
    no difference. The plan is rebuilt when the mask changes in place or moves to another device."""

    def __init__(self, linear: nn.Linear, block: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.block = linear.in_features, linear.out_features, block
        self.weight, self.bias = linear.weight, linear.bias
        for name, buffer in linear.named_buffers(recurse=False):  # the pruner's weight_mask
            self.register_buffer(name, buffer)
        self._plan: BandPlan | None = None
        self._key: tuple | None = None

    def plan(self) -> BandPlan:
        mask = self.weight_mask
        key = (mask.data_ptr(), mask._version, mask.device)
        if self._plan is None or key != self._key:
            self._plan, self._key = plan(mask, self.block).to(mask.device), key
        return self._plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return banded_linear(x, self.weight, self.bias, self.plan())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, block={self.block}"
