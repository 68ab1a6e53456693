"""Where a kernel can run, and how a GPU kernel is timed: shared by every package under ``kernels/``.

Triton kernels run on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (Triton's interpreter: slow,
exact, what the tests use). A module picks its Triton path with :func:`use_triton` and its reference otherwise.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable

import torch


@functools.cache
def triton_installed() -> bool:
    """Triton can be imported (looked up once: :func:`use_triton` runs on every banded layer's forward)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Triton's interpreter is on (``TRITON_INTERPRET=1``): kernels run on CPU tensors, in NumPy."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(t: torch.Tensor) -> bool:
    """A Triton kernel can run on ``t``: Triton is installed and ``t`` is on CUDA, or on the CPU under the
    interpreter."""
    return (t.is_cuda or (t.device.type == "cpu" and interpreting())) and triton_installed()


def cuda_ms(fn: Callable[[], object], reps: int = 50, warmup: int = 10, flush_l2: bool = True) -> list[float]:
    """Milliseconds of each of ``reps`` calls of ``fn`` on the current CUDA device, timed with CUDA events; with
    ``flush_l2`` a buffer larger than the L2 cache is overwritten before each call (outside the timed span),
    so weights are read from HBM as in decoding, not from a warm L2."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    l2 = getattr(props, "L2_cache_size", 0) or 64 * 2**20
    scratch = torch.empty(2 * l2 // 4 + 1, dtype=torch.int32, device="cuda") if flush_l2 else None
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if scratch is not None:
            scratch.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times
