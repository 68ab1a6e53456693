"""The activation-sparse GEMV on the CPU (``cpu.c``): ``sparsify(x, t) Wᵀ + b`` for a decoding batch of 1-4 rows,
reading only the rows of ``Wᵀ`` whose input channel the batch keeps, in float32 and float64.

Decoding on the CPU is bound by reading the weights, as on a GPU: at activation sparsity ``s`` the kernel reads
about ``1 - s`` of them (docs/kernels.md has the measurements). :class:`~kernels.sparse_gemv.reference.SparseGemvLinear`
calls it for CPU tensors where Triton does not run; it reads the same transposed copy of the weight the Triton
kernel reads. Built on first use by :mod:`kernels.clib` into ``$XDG_CACHE_HOME/sparsity-lab/sparse_gemv_cpu/``;
where it cannot be built (no compiler, say), :func:`unavailable` says why and the layer runs the reference.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from kernels import clib

SOURCE = Path(__file__).resolve().parent / "cpu.c"
DTYPES = {torch.float32: "f32", torch.float64: "f64"}
_I32, _I64, _P = ctypes.c_int32, ctypes.c_int64, ctypes.c_void_p
SIGNATURE = ([_I64, _I64, _I64, _P, _I64, _I64, _P, _P, ctypes.c_double, _P, _I32], _I64)


def library_path(cc: str) -> Path:
    return clib.library_path("sparse_gemv", SOURCE, cc)


def build(cc: str, path: Path, flags: tuple[str, ...] = clib.FLAGS) -> None:
    clib.build(SOURCE, cc, path, flags)


def bind(path: Path) -> ctypes.CDLL:
    return clib.bind(path, {f"sparse_gemv_{suffix}": SIGNATURE for suffix in DTYPES.values()})


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    return clib.load(library_path, build, bind)


def unavailable() -> str | None:
    """Why the kernel cannot run on this machine (built on the first call of the process), or None."""
    return _load()[1]


def runs_on(x2: torch.Tensor) -> bool:
    """The kernel takes ``x2``, a decoding step (:meth:`SparseGemvLinear._decoding
    <kernels.sparse_gemv.reference.SparseGemvLinear._decoding>`: 1-4 rows, no gradient, one dtype): on the CPU,
    in float32 or float64, and the kernel is built."""
    return x2.device.type == "cpu" and x2.dtype in DTYPES and unavailable() is None


def cpu_sparse_gemv(
    x2: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None, threshold: float
) -> tuple[torch.Tensor, int]:
    """(y (B, N) in ``x2``'s dtype, the number of input channels the batch kept): ``sparsify(x2, threshold) Wᵀ
    + b`` with ``weight_t`` = Wᵀ (K, N) contiguous; ``threshold`` already rounded to fp32 (the layer's)."""
    lib, why = _load()
    if lib is None:
        raise RuntimeError(f"sparse GEMV CPU kernel: {why}")
    b, k = x2.shape
    n = weight_t.shape[1]
    if weight_t.shape[0] != k or not weight_t.is_contiguous():
        raise ValueError(f"weight_t of shape {tuple(weight_t.shape)}: Wᵀ ({k}, N), contiguous")
    y = x2.new_empty(b, n)
    bias = None if bias is None else bias.detach().contiguous()
    kept = getattr(lib, f"sparse_gemv_{DTYPES[x2.dtype]}")(
        b, k, n, x2.data_ptr(), *x2.stride(), weight_t.data_ptr(), None if bias is None else bias.data_ptr(),
        threshold, y.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    if kept < 0:
        raise MemoryError(f"sparse GEMV CPU kernel: no memory to list {k} channels")
    return y, kept
