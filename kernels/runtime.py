"""Where a kernel can run, and how a GPU kernel is timed: shared by every package under ``kernels/``.

Triton kernels run on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1`` (Triton's interpreter: slow,
exact, what the tests use). A module picks its Triton path with :func:`use_triton` and its reference otherwise.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


@functools.cache
def triton_installed() -> bool:
    """Triton can be imported (looked up once: :func:`use_triton` runs on every banded layer's forward)."""
    return importlib.util.find_spec("triton") is not None


def cache_root() -> Path:
    """Where kernels built on first use are kept, outside the repository: ``$XDG_CACHE_HOME/sparsity-lab``
    (default ``~/.cache/sparsity-lab``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sparsity-lab"


def contents_key(t: torch.Tensor) -> tuple:
    """What tells whether a copy made from ``t`` (packed, transposed, masked, planned) still holds its values:
    the same memory, in-place version, device, dtype and strides. Every in-place write autograd sees (an
    optimizer step, ``mul_``, ``copy_``) bumps the version; a write through ``.data`` does not and is not seen."""
    return (t.data_ptr(), t._version, t.device, t.dtype, t.stride())


def grad_needed(*tensors: torch.Tensor | None) -> bool:
    """Autograd records this call: grad mode is on and one of ``tensors`` (None: an absent bias) requires a
    gradient. A kernel without a backward takes the call only where this is False (inference, decoding)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def interpreting() -> bool:
    """Triton's interpreter is on (``TRITON_INTERPRET=1``): kernels run on CPU tensors, in NumPy."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(t: torch.Tensor) -> bool:
    """A Triton kernel can run on ``t``: Triton is installed and ``t`` is on CUDA, or on the CPU under the
    interpreter."""
    return (t.is_cuda or (t.device.type == "cpu" and interpreting())) and triton_installed()


def cuda_ms(
    fn: Callable[[], object], reps: int = 50, warmup: int = 10, flush_l2: bool = True, graph: bool = False
) -> list[float]:
    """Milliseconds of each of ``reps`` calls of ``fn`` on the current CUDA device, timed with CUDA events; with
    ``flush_l2`` a buffer larger than the L2 cache is overwritten before each call (outside the timed span),
    so weights are read from HBM as in decoding, not from a warm L2.

    ``graph``: ``fn`` is captured once in a CUDA graph (after the warm-up calls) and each timed call replays it,
    so the time is the GPU's alone, as in a decoding loop or training step that runs under CUDA graphs; without
    it, the host's launch overhead (Python, Triton's launcher) counts wherever the GPU waits for it. Raises
    RuntimeError when ``fn`` cannot be captured (it synchronizes with the host, say)."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    l2 = getattr(props, "L2_cache_size", 0) or 64 * 2**20
    scratch = torch.empty(2 * l2 // 4 + 1, dtype=torch.int32, device="cuda") if flush_l2 else None
    for _ in range(warmup):
        fn()
    call = fn
    if graph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # allocations and library handles settle on the capture's side stream
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        captured = torch.cuda.CUDAGraph()
        with torch.cuda.graph(captured):
            fn()
        call = captured.replay
    times = []
    for _ in range(reps):
        if scratch is not None:
            scratch.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def compare(dense: Callable[[], object], kernel: Callable[[], object], reps: int, warmup: int) -> dict:
    """A kernel against the dense op it replaces, each timed by :func:`cuda_ms` (L2 flushed): medians in ms and
    their ratio, under CUDA graphs (``timing``: ``cuda-graph``, the GPU's time) when both can be captured, else
    both eager (``timing``: ``eager``); the eager medians are reported as well (``*_eager_ms``: with the host's
    launch overhead, which dominates calls of a few microseconds)."""
    dense_eager = statistics.median(cuda_ms(dense, reps, warmup))
    kernel_eager = statistics.median(cuda_ms(kernel, reps, warmup))
    try:
        dense_ms = statistics.median(cuda_ms(dense, reps, 1, graph=True))
        kernel_ms = statistics.median(cuda_ms(kernel, reps, 1, graph=True))
        timing = "cuda-graph"
    except RuntimeError as err:  # not capturable: compare like with like, both eager
        logger.warning("CUDA graph capture failed (%s): eager timings", str(err).splitlines()[0])
        dense_ms, kernel_ms, timing = dense_eager, kernel_eager, "eager"
    return {
        "dense_ms": round(dense_ms, 4),
        "kernel_ms": round(kernel_ms, 4),
        "speedup": round(dense_ms / kernel_ms, 3),
        "timing": timing,
        "dense_eager_ms": round(dense_eager, 4),
        "kernel_eager_ms": round(kernel_eager, 4),
    }


def interleaved(steps: dict[str, Callable[[], float]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Each step's times over ``rounds`` rounds, every round running all of them, in reverse order every other
    round (ABC CBA ...), so drifts of a shared machine fall on every side alike."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for k in range(rounds):
        for name in list(steps)[:: -1 if k % 2 else 1]:
            times[name].append(steps[name]())
    return times


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """``fn`` as a step of :func:`interleaved`: a call runs it and returns its seconds."""

    def run() -> float:
        tick = time.perf_counter()
        fn()
        return time.perf_counter() - tick

    return run


def median_ratio(slow: list[float], fast: list[float]) -> float:
    """The median of the per-round ratios ``slow / fast`` of two sides of :func:`interleaved`: how many times
    faster ``fast`` is."""
    return statistics.median(s / f for s, f in zip(slow, fast, strict=True))
