"""The banded linear's CPU kernel (``cpu.c``): built on first use with the system's C compiler, called through
ctypes, forward and backward.

What it computes is the reference's (:mod:`kernels.banded.reference`): ``y = x (W ⊙ M)ᵀ + b``, its dX, and dW
inside the mask (exactly zero outside). What differs is the tiling: :func:`tiling` cuts each product's written
side into tiles of 8 rows (4 where it writes the narrow side), each reading the hull of its rows' kept
columns, so the FLOPs computed are the band's plus an overhang of a few channels on a band tens of channels
wide, where the reference's batched GEMMs need tiles of 16-128 rows and overhang a quarter of the band or more.
``cpu.c``'s register-blocked loops run those small tiles near the speed of a dense GEMM. Layouts are chosen so
that an MLP of two banded layers has row-major tensors on its narrow (C-wide) side only, which the products
transpose chunk by chunk in cache (:class:`CpuBandedLinearFunction`). docs/kernels.md has the measurements.

Exact for any mask (the hulls come from the mask, the weights are packed as ``W ⊙ M``), in float32 and float64;
other dtypes (an autocast bf16 input, say) take the reference. OpenMP threads: ``torch.get_num_threads()``.

How it is built: :mod:`kernels.clib` (``cc -O3 -march=native -fopenmp`` on first use, into
``$XDG_CACHE_HOME/sparsity-lab/banded_cpu/``, once per machine). Where it cannot be built (no compiler, say),
:func:`unavailable` says why, and :class:`~kernels.banded.BandedLinear` logs that once and runs the reference.
"""

from __future__ import annotations

import ctypes
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kernels import clib
from kernels.banded.reference import TwoTilings
from kernels.runtime import contents_key, grad_needed

ROWS = (4, 8)  # rows per tile cpu.c's product takes; dW's tiles are at most 8 rows (cpu.c's ROWS)
SOURCE = Path(__file__).resolve().parent / "cpu.c"
FLAGS = clib.FLAGS
DTYPES = {torch.float32: "f32", torch.float64: "f64"}

_I32, _I64, _P = ctypes.c_int32, ctypes.c_int64, ctypes.c_void_p
_TILING = [_I32, _P, _P, _P, _P]  # tiles, row0, nrows, col0, width
SIGNATURES = {  # cpu.c's functions, per dtype suffix
    "pack": [*_TILING, _P, _I32, _P, _I64, _I64, _P, _I64, _I64, _P, _I32],
    "product": [_I64, *_TILING, _P, _I32, _P, _I64, _I64, _P, _I32, _I64, _P, _P, _I32, _I64, _I32],
    "transpose": [_I64, _I64, _P, _I64, _P, _I32],
    # a layer's steps (cpu.c's DEFINE_STEPS): one struct of arguments each (ForwardArgs, BackwardArgs)
    "forward": [_P],
    "backward": [_P],
}  # fmt: skip
STATUS = ("product", "forward", "backward")  # functions returning 1 where a thread had no memory for its buffers


compiler = clib.compiler


def _fields(spec: str, *structs: type[ctypes.Structure]) -> list[tuple[str, type]]:
    """ctypes ``_fields_`` from "name:type ..." (i32, i64, p: ``void *``, s: the next of ``structs``)."""
    nested = iter(structs)
    types = {"i32": _I32, "i64": _I64, "p": _P}
    return [(n, next(nested) if t == "s" else types[t]) for n, t in (f.split(":") for f in spec.split())]


class Tiles(ctypes.Structure):
    """``cpu.c``'s ``banded_tiles``: one product's tiles (:attr:`Tiling.c_tiles`)."""

    _fields_ = _fields(
        "rows_total:i64 cols_total:i64 tiles:i32 rows:i32 row0:p nrows:p col0:p width:p offset:p split_a:p "
        "split_b:p split_span:p"
    )


class ForwardArgs(ctypes.Structure):
    """``cpu.c``'s ``banded_forward_args``, field for field (described there): what :func:`forward` hands
    ``banded_forward``."""

    _fields_ = _fields(
        "m:i64 fwd:s bwd:s panel:p pack:i32 bpanel:p w:p w_rs:i64 w_cs:i64 mask:p m_rs:i64 m_cs:i64 x:p x_rows:i32 "
        "ldx:i64 bias:p out:p out_rows:i32 chunk:i64 threads:i32",
        Tiles,
        Tiles,
    )


class BackwardArgs(ctypes.Structure):
    """``cpu.c``'s ``banded_backward_args``: what :func:`backward` hands ``banded_backward`` (a field left unset
    is 0 or NULL: no dX, no dW or no db)."""

    _fields_ = _fields(
        "m:i64 bwd:s bpanel:p dy:p dy_rows:i32 lddy:i64 dx:p dx_rows:i32 chunk:i64 dw:s bt:p v:p n_v:i64 ldv:i64 "
        "mask:p m_rs:i64 m_cs:i64 g:p g_rs:i64 g_cs:i64 g_numel:i64 db:p s:p s_tokens_last:i32 n_s:i64 lds:i64 "
        "by_rows:i32 threads:i32",
        Tiles,
        Tiles,
    )


def library_path(cc: str) -> Path:
    """Where the library built by ``cc`` for this source, these flags and this CPU lives."""
    return clib.library_path("banded", SOURCE, cc)


def build(cc: str, path: Path, flags: tuple[str, ...] = FLAGS) -> None:
    """Compile ``cpu.c`` into ``path`` (atomically); raises RuntimeError with the compiler's output."""
    clib.build(SOURCE, cc, path, flags)


def bind(path: Path) -> ctypes.CDLL:
    """The library at ``path`` with its functions' signatures set."""
    signatures = {
        f"banded_{name}_{suffix}": (argtypes, _I32 if name in STATUS else None)
        for suffix in DTYPES.values()
        for name, argtypes in SIGNATURES.items()
    }
    return clib.bind(path, {**signatures, "banded_advise_huge": ([_P, _I64], _I32), "banded_layout": ([_P, _P], _I32)})


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    return clib.load(library_path, build, bind)


def unavailable() -> str | None:
    """Why the kernel cannot run on this machine (built on the first call of the process), or None."""
    return _load()[1]


def runs_on(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """The kernel takes these operands: CPU tensors of one dtype it has (float32, float64), and it is built."""
    dtype = x.dtype  # (each look-up here costs: this runs on every call, decoding steps included)
    return (
        x.is_cpu
        and dtype in DTYPES
        and weight.dtype == dtype
        and (bias is None or bias.dtype == dtype)
        and unavailable() is None
    )


@dataclass(frozen=True)
class Tiling:
    """One product's tiles: tile ``t`` writes rows ``[row0, row0 + nrows)`` of a (rows_total, cols_total)
    mask's written side and reads columns ``[col0, col0 + width)``, the hull of its rows' kept entries
    (width 0: none kept); its packed weights start at ``offset`` (``width · rows`` values)."""

    rows_total: int
    cols_total: int
    rows: int  # per tile, one of ROWS
    row0: torch.Tensor  # int32 (tiles,)
    nrows: torch.Tensor
    col0: torch.Tensor
    width: torch.Tensor
    offset: torch.Tensor  # int64 (tiles,)
    panel: int  # values in the packed weights
    # dW's split blocks (8-row tiles): each half's first kept column (rows 0-3, rows 4-7) and the wider half's
    # span, int32 (tiles,); the span is NO_SPLIT for 4-row tiles. cpu.c uses them where that takes fewer vectors.
    split: tuple[torch.Tensor, torch.Tensor, torch.Tensor]

    @property
    def tiles(self) -> int:
        return len(self.row0)

    @property
    def density(self) -> float:
        """Fraction of the dense product's FLOPs the tiles compute."""
        return int((self.nrows.long() * self.width.long()).sum()) / max(1, self.rows_total * self.cols_total)

    @functools.cached_property
    def packed_args(self) -> tuple:
        """The tiling's arguments of ``cpu.c``'s pack and product: the tile count, four arrays, the packed
        weights' offsets and the rows per tile."""
        arrays = (self.row0, self.nrows, self.col0, self.width, self.offset)
        return (self.tiles, *(t.data_ptr() for t in arrays), self.rows)

    @functools.cached_property
    def c_tiles(self) -> Tiles:
        """The tiling as ``cpu.c``'s steps take it (a ``banded_tiles``; it points into this tiling's tensors)."""
        arrays = (self.row0, self.nrows, self.col0, self.width, self.offset, *self.split)
        return Tiles(self.rows_total, self.cols_total, self.tiles, self.rows, *(t.data_ptr() for t in arrays))


def tile_rows(rows_total: int, cols_total: int) -> int:
    """Rows per tile for a product writing ``rows_total`` rows and reading ``cols_total``: a tile reads its
    band plus ``rows · cols_total / rows_total`` columns, so a product writing the narrow side (FC1's dX,
    FC2's forward, where that is ``4 · rows``) takes 4-row tiles, one writing the wide side 8-row tiles (which
    reuse each loaded vector of tokens for more rows)."""
    return ROWS[0] if rows_total < cols_total else ROWS[1]


@torch.no_grad()
def tiling(mask: torch.Tensor, rows: int | None = None) -> Tiling:
    """The tiles of bool ``mask`` (rows_total, cols_total; rows: the side the product writes), ``rows`` rows
    each (default :func:`tile_rows`)."""
    rows_total, cols_total = mask.shape
    rows = rows or tile_rows(rows_total, cols_total)
    if rows not in ROWS:
        raise ValueError(f"banded CPU kernel: {rows} rows per tile; one of {ROWS}")
    tiles = -(-rows_total // rows)
    padded = torch.zeros(tiles * rows, cols_total, dtype=torch.bool)
    padded[:rows_total] = mask.cpu()
    first, width = _hulls(padded.view(tiles, rows, cols_total))
    halves = _hulls(padded.view(2 * tiles, rows // 2, cols_total))
    row0 = torch.arange(tiles) * rows
    offset = torch.cumsum(width * rows, 0) - width * rows
    i32 = lambda t: t.to(torch.int32).contiguous()  # noqa: E731
    span = halves[1].view(tiles, 2).amax(1) if rows == ROWS[1] else torch.full((tiles,), NO_SPLIT)
    return Tiling(
        rows_total,
        cols_total,
        rows,
        i32(row0),
        i32((rows_total - row0).clamp(max=rows)),
        i32(first),
        i32(width),
        offset.to(torch.int64).contiguous(),
        int(width.sum()) * rows,
        (i32(halves[0][0::2]), i32(halves[0][1::2]), i32(span)),
    )


NO_SPLIT = 1 << 30


def _hulls(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, width) of each group's hull of kept columns; ``groups`` bool (n, rows, cols); (0, 0) if none."""
    kept = groups.any(1).to(torch.int8)  # (n, cols): columns the group reads
    some = kept.any(1)
    first = kept.argmax(1)  # the first maximum: the first kept column
    last = kept.shape[1] - 1 - kept.flip(1).argmax(1)
    return torch.where(some, first, 0), torch.where(some, last - first + 1, 0)


@dataclass(frozen=True)
class CpuPlan(TwoTilings):
    """The C kernel's tilings of one (out, in) ``mask``, and what inference keeps between calls: the forward's
    packed weights (:meth:`kept_panel`) and its arguments (:meth:`infer`)."""

    fwd: Tiling
    bwd: Tiling
    mask: torch.Tensor  # bool (out, in), contiguous, on the CPU
    kept: dict = field(default_factory=dict, compare=False, repr=False)  # "panel", "args" -> (key, what)

    def kept_panel(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight ⊙ mask`` packed for the forward's tiles, kept and packed again only when the weight changed
        (another tensor, or written in place: its version), so decoding reads only the band's weights per token,
        not all of them to pack them; a weight written through ``.data`` bumps no version and would not be
        seen. Inference only: with autograd (training, gradcheck's perturbations) :func:`forward` packs the
        weights on every call, inside ``cpu.c``."""
        key = contents_key(weight)
        if self.kept.get("panel", (None,))[0] != key:
            self.kept["panel"] = key, pack(weight.detach(), self.mask, self.fwd)
        return self.kept["panel"][1]

    def infer(self, weight: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``y = x (W ⊙ M)ᵀ + bias`` (..., out) without autograd (inference, decoding) for ``x`` (..., in), its
        tokens in the layout they do not have in ``x`` (one token: row-major, the same memory): :func:`forward`
        on the :meth:`kept_panel`, with its arguments kept too while the input's shape and layout, the weight
        and the bias stay the same, so that a decoding step is one call of ``cpu.c`` and a few checks (ctypes
        converts 34 separate arguments in 3 us, dense GPT-2 tiny's whole FC1 takes 8 us; and each reshape, view
        or transpose of a tensor about 1 us, so a step makes none)."""
        key = (x.shape, x.stride(), x.dtype, contents_key(weight), None if bias is None else contents_key(bias))
        kept = self.kept.get("args")
        if kept is None or kept[0] != key:
            x2 = x.reshape(-1, self.in_features)
            bias_c, panel = None if bias is None else bias.contiguous(), self.kept_panel(weight)
            a, b, out_rows = _forward_args(self, x2, bias_c, panel)
            m, lead = x2.shape[0], x.shape[:-1]
            direct = b.data_ptr() == x.data_ptr()  # the kernel reads x itself, not a copy of it
            tokens_last = not out_rows and m > 1  # (one token's row is its column: no transpose to undo)
            shape = (self.out_features, m) if tokens_last else (*lead, self.out_features)
            # the tensors the struct points at are kept with it (the panel too: kept_panel may replace its own)
            kept = self.kept["args"] = key, a, (bias_c, panel), direct, tokens_last, shape, _fn("forward", x.dtype)
        _, template, _, direct, tokens_last, shape, fn = kept
        a = ForwardArgs.from_buffer_copy(template)  # one per call: ctypes lets other threads run while cpu.c does
        b = x if direct else x.reshape(-1, self.in_features).contiguous()  # (held until cpu.c returns)
        out = new_output(x, *shape)
        a.x, a.out, a.threads = b.data_ptr(), out.data_ptr(), torch.get_num_threads()
        _succeeded(fn(ctypes.byref(a)), a.chunk)
        return out.t().view(*x.shape[:-1], self.out_features) if tokens_last else out


@torch.no_grad()
def plan(mask: torch.Tensor) -> CpuPlan:
    mask = mask.detach().to(device="cpu", dtype=torch.bool).contiguous()
    return CpuPlan(tiling(mask), tiling(mask.t()), mask)


def _fn(name: str, dtype: torch.dtype):
    lib, why = _load()
    if lib is None:
        raise RuntimeError(f"banded CPU kernel: {why}")
    return getattr(lib, f"banded_{name}_{DTYPES[dtype]}")  # ctypes keeps each function as an attribute


def _ptr(t: torch.Tensor | None) -> int | None:
    """A tensor's address as ctypes takes it for a ``void *`` (None: NULL)."""
    return None if t is None else t.data_ptr()


HUGE_OUTPUT = 4 << 20  # bytes: outputs this large are advised to use transparent huge pages


def new_output(like: torch.Tensor, *shape: int) -> torch.Tensor:
    """An uninitialised tensor for a kernel's output. One of ``HUGE_OUTPUT`` bytes or more is advised to use
    transparent huge pages before its first touch (``cpu.c``'s ``banded_advise_huge``): the allocator hands
    outputs of 32 MiB and more out as fresh mappings every time, and their first touch page by page (4 KiB)
    cost as much as the product (measured: a fresh 32 MiB output written in 9.8 ms, 1.8 ms advised)."""
    out = like.new_empty(*shape)  # (unpacked: a tuple costs 0.5 us more)
    nbytes = math.prod(shape) * like.itemsize
    if nbytes >= HUGE_OUTPUT:
        _load()[0].banded_advise_huge(_ptr(out), nbytes)
    return out


def product_output(b: torch.Tensor, rows_total: int, out_rows: bool) -> torch.Tensor:
    """A new output for a product over ``b``'s M tokens: (M, rows_total) row-major when ``out_rows``, else
    (rows_total, M), the tokens-last result stored as its transpose."""
    m = b.shape[0]
    return new_output(b, m, rows_total) if out_rows else new_output(b, rows_total, m)


def pack(a: torch.Tensor, mask: torch.Tensor, t: Tiling) -> torch.Tensor:
    """``a ⊙ mask`` ((rows_total, cols_total) each, any strides) packed tile by tile, (width, rows) per tile."""
    panel = a.new_empty(t.panel)
    _fn("pack", a.dtype)(
        *t.packed_args, _ptr(a), *a.stride(), _ptr(mask), *mask.stride(), _ptr(panel),
        torch.get_num_threads(),
    )  # fmt: skip
    return panel


CHUNK_BYTES = 256 << 10  # a product's buffer for one chunk of a row-major side (cpu.c): fits in L2


def chunk_tokens(channels: int, itemsize: int) -> int:
    """Tokens per chunk of a product with a row-major side ``channels`` wide: a buffer of ``CHUNK_BYTES`` at
    most, a multiple of 64 tokens (a 4-row tile's strip), at least 64."""
    return max(64, CHUNK_BYTES // (channels * itemsize) // 64 * 64)


def _product_operands(
    t: Tiling, b: torch.Tensor, out_rows: bool, chunk: int = 0, out: bool = True
) -> tuple[torch.Tensor, bool, int, torch.Tensor | None, int]:
    """What a product over ``t`` of ``b`` (M, cols_total, tokens last or row-major) needs: (the tensor to read,
    ``b`` or a row-major copy where its rows are not contiguous (the caller keeps it alive through the call);
    whether it is row-major; its leading dimension; a new output, row-major when ``out_rows``, else tokens last
    (None without ``out``); the tokens per chunk of a row-major side (``chunk``; 0: :func:`chunk_tokens`))."""
    b_rows = not is_tokens_last(b)
    if b_rows and b.stride(1) != 1:
        b = b.contiguous()
    result = product_output(b, t.rows_total, out_rows) if out else None
    if b_rows or out_rows:
        chunk = chunk or chunk_tokens(
            max(t.cols_total if b_rows else 1, t.rows_total if out_rows else 1), b.element_size()
        )
    return b, b_rows, b.stride(0) if b_rows else b.shape[0], result, chunk


def _succeeded(failed: int, chunk: int) -> None:
    if failed:
        raise MemoryError(f"banded CPU kernel: no memory for a product's buffers of {chunk} tokens")


def product(
    t: Tiling, panel: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, out_rows: bool, chunk: int = 0
) -> torch.Tensor:
    """(M, rows_total): ``b`` (M, cols_total, tokens last or row-major) times the packed ``Aᵀ`` (:func:`pack`),
    plus ``bias``; returned row-major when ``out_rows``, else tokens last. A row-major side is transposed chunk
    by chunk inside the kernel (``chunk`` tokens at a time; 0: :func:`chunk_tokens`), never in memory."""
    b, b_rows, ldb, out, chunk = _product_operands(t, b, out_rows, chunk)
    bias = None if bias is None else bias.contiguous()
    failed = _fn("product", b.dtype)(
        b.shape[0], *t.packed_args, _ptr(panel), t.rows_total, t.cols_total, _ptr(b), int(b_rows), ldb, _ptr(bias),
        _ptr(out), int(out_rows), chunk, torch.get_num_threads(),
    )  # fmt: skip
    _succeeded(failed, chunk)
    return out if out_rows else out.t()


def _forward_args(
    p: CpuPlan, x2: torch.Tensor, bias: torch.Tensor | None, panel: torch.Tensor
) -> tuple[ForwardArgs, torch.Tensor, bool]:
    """(the arguments of a forward over ``x2`` with the forward's packed weights ``panel``, without the output
    and nothing to pack; the tensor they read for ``x2``; whether ``y`` is row-major)."""
    out_rows = is_tokens_last(x2)
    b, b_rows, ldb, _, chunk = _product_operands(p.fwd, x2, out_rows, out=False)
    a = ForwardArgs(m=x2.shape[0], fwd=p.fwd.c_tiles, bwd=p.bwd.c_tiles, panel=_ptr(panel), x=_ptr(b),
                    x_rows=int(b_rows), ldx=ldb, bias=_ptr(bias), out_rows=int(out_rows), chunk=chunk)  # fmt: skip
    return a, b, out_rows


def forward(
    p: CpuPlan, weight: torch.Tensor, x2: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, dX's packed weights): ``y = x2 (W ⊙ M)ᵀ + bias`` (M, out) in the layout ``x2`` (M, in) does not
    have, in one call of ``cpu.c`` that first packs the weights for the forward's tiles and for dX's (kept for
    :func:`backward`). Inference calls :meth:`CpuPlan.infer` instead."""
    bias = None if bias is None else bias.contiguous()
    panel, dx_panel = weight.new_empty(p.fwd.panel), weight.new_empty(p.bwd.panel)
    a, b, out_rows = _forward_args(p, x2, bias, panel)
    out = product_output(b, p.out_features, out_rows)
    a.pack, a.bpanel, a.w, (a.w_rs, a.w_cs) = 1, _ptr(dx_panel), _ptr(weight), weight.stride()
    a.mask, (a.m_rs, a.m_cs) = _ptr(p.mask), p.mask.stride()
    a.out, a.threads = _ptr(out), torch.get_num_threads()
    _succeeded(_fn("forward", b.dtype)(ctypes.byref(a)), a.chunk)
    return (out if out_rows else out.t()), dx_panel


def backward(
    p: CpuPlan, dx_panel: torch.Tensor, x2: torch.Tensor, dy2: torch.Tensor, dx: bool, dw: bool, db: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(dX, dW, dB), each only where asked for (else None), in one call of ``cpu.c``: dX (M, in) in ``x2``'s
    layout, from dX's packed weights (:func:`forward`); dW (out, in) ``dyᵀ x`` on the mask's entries, zero
    elsewhere; dB (out,) the sums of ``dy`` over the tokens. ``x2`` (M, in) and ``dy2`` (M, out) in any layout.

    dW's kernel reads one operand tokens last (broadcast, one token at a time) and the other row-major (vectors
    of channels): FC1 has ``x`` row-major and ``dy`` tokens last, FC2 the other way round, as GPT-2's MLP hands
    them over; a layer given both in one layout transposes the narrower one first. Where dX's product and dW
    both read ``dyᵀ`` and dx is row-major (FC1), ``cpu.c`` makes one pass over it, each thread on its own rows
    (``backward_by_rows``)."""
    dx_rows = not is_tokens_last(x2)
    b, b_rows, ldb, dx_out, chunk = _product_operands(p.bwd, dy2, dx_rows, out=dx)
    a = BackwardArgs(m=dy2.shape[0], bwd=p.bwd.c_tiles, bpanel=_ptr(dx_panel), dy=_ptr(b), dy_rows=int(b_rows),
                     lddy=ldb, dx=_ptr(dx_out), dx_rows=int(dx_rows), chunk=chunk,
                     threads=torch.get_num_threads())  # fmt: skip
    dw_out = None
    if dw:
        dw_out = new_output(dy2, p.out_features, p.in_features)
        xw, dyw = x2, dy2
        if is_tokens_last(xw) == is_tokens_last(dyw):
            if p.in_features <= p.out_features:  # x goes row-major when dy is tokens last, tokens last otherwise
                xw = transposed(xw.t()) if is_tokens_last(xw) else transposed(xw).t()
            else:
                dyw = transposed(dyw.t()) if is_tokens_last(dyw) else transposed(dyw).t()
        if not is_tokens_last(xw):  # dW[o, i] = Σ_j dyᵀ[o, j] x[j, i]: tiles over output rows
            t, bt, v, mask, g = p.fwd, dyw.t(), xw.contiguous(), p.mask, dw_out
            # dX's product reads the same dyᵀ and writes dx row-major (FC1): one pass over dyᵀ, each thread on
            # its rows (cpu.c's backward_by_rows)
            a.by_rows = dx and dx_rows and dyw is dy2
        else:  # dWᵀ[i, o] = Σ_j xᵀ[i, j] dy[j, o]: tiles over input rows
            t, bt, v, mask, g = p.bwd, xw.t(), dyw.contiguous(), p.mask.t(), dw_out.t()
        a.dw, a.bt, a.v, a.n_v, a.ldv = t.c_tiles, _ptr(bt), _ptr(v), v.shape[1], v.stride(0)
        a.mask, (a.m_rs, a.m_cs), a.g, (a.g_rs, a.g_cs) = _ptr(mask), mask.stride(), _ptr(g), g.stride()
        a.g_numel = g.numel()
    db_out = None
    if db:  # dy's channels as rows (tokens last) or columns (row-major) of a matrix with unit stride along them
        db_out = dy2.new_empty(p.out_features)
        s = dy2.t() if is_tokens_last(dy2) else (dy2 if dy2.stride(1) == 1 else dy2.contiguous())
        a.db, a.s, a.s_tokens_last = _ptr(db_out), _ptr(s), int(is_tokens_last(dy2))
        a.n_s, a.lds = p.out_features, s.stride(0)
    _succeeded(_fn("backward", b.dtype)(ctypes.byref(a)), chunk)
    if dx_out is not None and not dx_rows:
        dx_out = dx_out.t()
    return dx_out, dw_out, db_out


def is_tokens_last(a: torch.Tensor) -> bool:
    """``a`` (M, n) is the transposed view of a contiguous (n, M) matrix (read from the strides: this runs on
    every call, and a view would cost more than the test)."""
    m, n = a.shape
    return (m <= 1 or a.stride(0) == 1) and (n <= 1 or a.stride(1) == m)


def transposed(a: torch.Tensor) -> torch.Tensor:
    """``aᵀ`` of a 2-D ``a`` as a contiguous matrix, copied by ``cpu.c``'s blocked transpose (several times
    faster than ``a.t().contiguous()`` here)."""
    a = a if a.stride(1) == 1 else a.contiguous()
    rows, cols = a.shape
    out = new_output(a, cols, rows)
    _fn("transpose", a.dtype)(rows, cols, _ptr(a), a.stride(0), _ptr(out), torch.get_num_threads())
    return out


class CpuBandedLinearFunction(torch.autograd.Function):
    """``x (W ⊙ M)ᵀ + b`` through ``cpu.c``; ``x`` of any shape (..., in), one dtype of :data:`DTYPES` shared
    with ``weight`` and ``bias``.

    Layouts. ``y`` comes back in the layout ``x`` did not have and ``dx`` in the one it had, so that in GPT-2's
    MLP every row-major tensor is a narrow (C-wide) one: FC1 reads LayerNorm's row-major output and hands FC2 a
    tokens-last ``y`` (4C wide), FC2 gives the residual stream a row-major ``y``; backward mirrors it (FC2's
    row-major ``dy``, its tokens-last ``dx`` through GELU to FC1, FC1's row-major ``dx`` for LayerNorm). The
    products transpose a row-major side chunk by chunk in cache (:func:`product`), and dW reads one operand in
    each layout (:func:`backward`), so none of these is ever transposed in memory. The weights are packed for
    both the forward's and dX's tiles in the forward (dX's kept for the backward), each step one call of
    ``cpu.c``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: CpuPlan) -> torch.Tensor:
        x2 = x.reshape(-1, p.in_features)
        y, dx_panel = forward(p, weight, x2, bias)
        ctx.save_for_backward(x2, dx_panel)
        ctx.plan, ctx.lead = p, x.shape[:-1]
        return y.reshape(*x.shape[:-1], p.out_features)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x2, dx_panel = ctx.saved_tensors
        p, (want_dx, want_dw, want_db, _) = ctx.plan, ctx.needs_input_grad
        dx, dw, db = backward(p, dx_panel, x2, dy.reshape(-1, p.out_features), want_dx, want_dw, want_db)
        return (None if dx is None else dx.reshape(*ctx.lead, p.in_features)), dw, db, None


def cpu_banded_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: CpuPlan) -> torch.Tensor:
    """``x (W ⊙ M)ᵀ + b`` through the CPU kernel, differentiable; see :func:`runs_on` for what it takes. Without
    a gradient to compute (inference, as in decoding) it runs the forward directly, without autograd's
    bookkeeping."""
    if not runs_on(x, weight, bias):
        why = unavailable() or f"x {x.dtype} on {x.device}, weight {weight.dtype}: CPU float32 or float64, one dtype"
        raise ValueError(f"banded CPU kernel cannot run: {why}")
    return banded_linear_unchecked(x, weight, bias, p)


def banded_linear_unchecked(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: CpuPlan
) -> torch.Tensor:
    """:func:`cpu_banded_linear` for a caller that has checked :func:`runs_on` itself."""
    if grad_needed(x, weight, bias):
        p.kept.clear()  # training (again, after an evaluation): inference's panel and arguments are not held
        return CpuBandedLinearFunction.apply(x, weight, bias, p)
    return p.infer(weight, x, bias)
