"""Memory as published results report it: counted from the tensors, and measured while a run trains.

Counted (:func:`counted_bytes`): parameter, gradient, optimizer-state and mask bytes, read off the actual
tensors at the end of training, and optimizer state plus masks as a multiple of the weights (the "x weights"
column of the published tables: AdamW holds two moments per weight, 2.0x; AdamWPrune adds a one-byte bool mask
per prunable weight and no score tensor). Optimizer state is every tensor in ``optimizer.state``, each storage
counted once (views of one buffer are one allocation), including the 0-dim ``step`` counters torch's Adam
family keeps per parameter (4 bytes each): they are memory the optimizer holds, so they count.

Measured (:class:`MemorySampler`): a daemon thread wakes every ``MEMORY_SAMPLE_MS`` and records

- the process's resident set size, from ``/proc/self/statm`` (Linux; elsewhere ``getrusage``'s peak);
- on CUDA, the caching allocator's ``memory_allocated`` / ``memory_reserved``, and the device memory the driver
  reports for this process: NVML (``pynvml``, from ``nvidia-ml-py``) on NVIDIA, ``amdsmi`` on AMD (ROCm), each
  summed over every GPU whose process list holds this pid. That is the figure ``nvidia-smi`` and the published
  tables show: it includes the CUDA context (some 300-500 MiB) and library handles, which the allocator's
  figures do not. The context alone is measured once, right after CUDA starts (:func:`cuda_context_bytes`).

A probe that fails (no driver library, a pid NVML does not list, as in a container without the host's PID
namespace) gives None for its figure, logged once; training never sees an exception from here. The thread
buffers rows; the trainer drains them on its own thread into ``metrics.jsonl`` (split ``"memory"``), so the file
has one writer and a resume cuts it back exactly. The step in a row is the last one the trainer published in
:attr:`MemorySampler.step` (a plain attribute write, no lock on the hot path).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import resource
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

SPLIT = "memory"  # the rows' split in metrics.jsonl
PEAKS = ("peak_allocated_bytes", "peak_reserved_bytes", "peak_device_bytes", "peak_rss_bytes")


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a nest of dicts, lists and tuples (an optimizer's per-parameter state)."""
    if torch.is_tensor(value):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


def _storage_bytes(value: Any, exclude: set[tuple[str, int]] | None = None) -> dict[tuple[str, int], int]:
    """Bytes of every storage under ``value``, each counted once (views share a storage), less ``exclude``."""
    storages: dict[tuple[str, int], int] = {}
    for t in _tensors(value):
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr())
        if not exclude or key not in exclude:
            storages[key] = storage.nbytes()
    return storages


def counted_bytes(model: nn.Module, optimizer: torch.optim.Optimizer, pruner) -> dict[str, int | float]:
    """Bytes of the parameters, the gradients that exist, the optimizer's state (each storage once), the
    pruner's bool masks and the pruner's own state (movement's scores, random's generator), and
    ``state_x_weights`` = (optimizer state + masks + pruner state) / parameters: what training keeps per weight
    besides the weight itself and its gradient."""
    params = list(model.parameters())
    param_bytes = sum(_nbytes(p) for p in params)
    optimizer_storages = _storage_bytes(list(optimizer.state.values()))
    state_bytes = sum(optimizer_storages.values())
    mask_bytes = pruner.mask_bytes()
    pruner_bytes = sum(_storage_bytes(pruner.state_dict(), exclude=set(optimizer_storages)).values())
    return {
        "param_bytes": param_bytes,
        "grad_bytes": sum(_nbytes(p.grad) for p in params if p.grad is not None),
        "optimizer_state_bytes": state_bytes,
        "mask_bytes": mask_bytes,
        "pruner_state_bytes": pruner_bytes,
        "state_x_weights": (state_bytes + mask_bytes + pruner_bytes) / param_bytes if param_bytes else None,
    }


# --------------------------------------------------------------------------- host memory

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def peak_rss_bytes() -> int:
    """This process's peak resident set size (the kernel's high-water mark)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux


def rss_bytes() -> int:
    """This process's resident set size now: ``/proc/self/statm``'s resident pages; the peak where there is no
    ``/proc``."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return peak_rss_bytes()


# --------------------------------------------------------------------------- device memory of this process


class Probe:
    """The device memory the driver reports for this process, summed over its GPUs (None: unknown).

    ``read`` never raises: the first failure is logged, and the figure is None from then on or until it reads
    again."""

    name = "probe"

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.warned = False

    def usage(self) -> list[tuple[int, int | None]]:
        """(pid, bytes) of every process on every GPU."""
        raise NotImplementedError

    def read(self) -> int | None:
        try:
            used = [b for pid, b in self.usage() if pid == self.pid]
        except Exception as e:
            self.warn(f"{self.name} failed ({type(e).__name__}: {e})")
            return None
        if not used or None in used:
            self.warn(
                f"{self.name} lists no memory figure for this process (pid {self.pid}); in a container without "
                "the host's PID namespace the driver reports host pids"
            )
            return None
        return sum(used)

    def warn(self, message: str) -> None:
        if not self.warned:
            self.warned = True
            logger.warning("%s: device memory of the process is not recorded", message)

    def close(self) -> None:
        pass


class NvmlProbe(Probe):
    """NVIDIA, through NVML (``pynvml``): ``nvmlDeviceGetComputeRunningProcesses`` on every GPU. Every GPU of the
    machine is asked, so CUDA_VISIBLE_DEVICES (and its order, which need not be NVML's) needs no mapping."""

    name = "NVML"

    def __init__(self) -> None:
        super().__init__()
        import pynvml

        self.nvml = pynvml
        pynvml.nvmlInit()
        self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]

    def usage(self) -> list[tuple[int, int | None]]:
        get = self.nvml.nvmlDeviceGetComputeRunningProcesses
        return [(p.pid, p.usedGpuMemory) for h in self.handles for p in get(h)]

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception as e:
            logger.debug("nvmlShutdown: %s", e)


class AmdSmiProbe(Probe):
    """AMD, through ``amdsmi`` (ROCm): each GPU's process list, VRAM in use per process."""

    name = "amdsmi"

    def __init__(self) -> None:
        super().__init__()
        import amdsmi

        self.amdsmi = amdsmi
        amdsmi.amdsmi_init()
        self.handles = amdsmi.amdsmi_get_processor_handles()

    def usage(self) -> list[tuple[int, int | None]]:
        out = []
        for h in self.handles:
            for p in self.amdsmi.amdsmi_get_gpu_process_list(h):
                # ROCm 6.1+ lists dicts; older releases list handles to ask about
                info = p if isinstance(p, dict) else self.amdsmi.amdsmi_get_gpu_process_info(h, p)
                vram = (info.get("memory_usage") or {}).get("vram_mem", info.get("mem"))
                out.append((info["pid"], vram))
        return out

    def close(self) -> None:
        try:
            self.amdsmi.amdsmi_shut_down()
        except Exception as e:
            logger.debug("amdsmi_shut_down: %s", e)


def device_probe(device: torch.device) -> Probe | None:
    """The probe for ``device``'s vendor (None off CUDA, or when its library is missing or will not start)."""
    if device.type != "cuda":
        return None
    cls, package = (AmdSmiProbe, "amdsmi") if torch.version.hip else (NvmlProbe, "nvidia-ml-py")
    try:
        return cls()
    except ImportError:
        logger.warning("%s is not installed: device memory of the process is not recorded", package)
    except Exception as e:
        logger.warning("%s did not start (%s: %s): device memory is not recorded", cls.name, type(e).__name__, e)
    return None


def cuda_context_bytes(device: torch.device, probe: Probe | None) -> int | None:
    """The CUDA context's size: this process's device memory minus what the caching allocator holds, taken
    right after CUDA starts (before the model is moved; a tensor of one element makes sure it has started)."""
    if device.type != "cuda" or probe is None:
        return None
    torch.zeros(1, device=device)
    torch.cuda.synchronize(device)
    used = probe.read()
    return None if used is None else used - torch.cuda.memory_reserved(device)


# --------------------------------------------------------------------------- the sampler


class MemorySampler:
    """Samples memory every ``interval`` seconds in a daemon thread (0: no thread, no timeline rows; the peaks
    still come from the allocator and ``getrusage``), keeps the peaks and buffers timeline rows for
    :meth:`drain`. Made before the model is moved to the device, so that it measures the CUDA context."""

    def __init__(self, device: torch.device, interval: float, probe: Probe | None = None) -> None:
        self.device, self.interval = device, interval
        self.probe = device_probe(device) if probe is None else probe
        self.cuda = device.type == "cuda"
        self.context_bytes = cuda_context_bytes(device, self.probe)
        self.step = 0  # the trainer's last step, written by the trainer's thread
        self.rows: collections.deque[dict] = collections.deque()  # appends and pops are thread-safe
        self.prior: dict = {}
        self.peak_rss = 0
        self.peak_device: int | None = None
        self.started: float | None = None  # time.monotonic() at start()
        self.failed = False
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    def start(self, prior: dict | None = None, step: int = 0) -> None:
        """Start sampling at ``step``; ``prior`` is :meth:`state` of the run so far (a resumed run goes on from
        it: its peaks, and its time line from the seconds it had run)."""
        self.prior, self.step = dict(prior or {}), step
        self.started = time.monotonic()
        self.sample()
        if self.interval > 0:
            self.thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        # Samples at fixed times (start + k * interval), so the time line does not drift; a late wake-up skips
        # the slots it missed rather than sampling twice in a row.
        slot = 0
        while True:
            ran = time.monotonic() - self.started
            slot = max(slot + 1, math.floor(ran / self.interval) + 1)
            if self.stopping.wait(slot * self.interval - ran):
                return
            try:
                self.sample()
            except Exception as e:  # a broken device: the time line stops, training goes on
                if not self.failed:
                    self.failed = True
                    logger.warning("memory sample failed (%s: %s)", type(e).__name__, e)

    def elapsed(self) -> float:
        """Seconds of the run so far, counting those before a resume."""
        ran = 0.0 if self.started is None else time.monotonic() - self.started
        return self.prior.get("seconds", 0.0) + ran

    def sample(self) -> None:
        """One measurement: the peaks updated, and a timeline row buffered when there is a timeline."""
        seconds = self.elapsed()
        rss = rss_bytes()
        used = self.probe.read() if self.probe is not None else None
        allocated = reserved = None
        if self.cuda:
            allocated, reserved = torch.cuda.memory_allocated(self.device), torch.cuda.memory_reserved(self.device)
        self.peak_rss = max(self.peak_rss, rss)
        if used is not None:
            self.peak_device = max(self.peak_device or 0, used)
        if self.interval > 0:
            self.rows.append(
                {
                    "split": SPLIT,
                    "step": self.step,
                    "time_s": round(seconds, 3),
                    "rss_bytes": rss,
                    "device_bytes": used,
                    "allocated_bytes": allocated,
                    "reserved_bytes": reserved,
                }
            )

    def drain(self) -> list[dict]:
        """The rows sampled since the last drain, oldest first."""
        rows = []
        while self.rows:
            rows.append(self.rows.popleft())
        return rows

    def stop(self) -> None:
        """Stop the thread and wait for it; one last sample; the driver library closed. Safe to call twice."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self.thread is not None:
            self.thread.join()
        if self.started is not None:
            self.sample()
        if self.probe is not None:
            self.probe.close()

    def peaks(self) -> dict[str, int | None]:
        """The run's peaks (this process's, and those of the processes before a resume)."""
        allocated = reserved = None
        if self.cuda:
            allocated = int(torch.cuda.max_memory_allocated(self.device))
            reserved = int(torch.cuda.max_memory_reserved(self.device))
        now = {
            "peak_allocated_bytes": allocated,
            "peak_reserved_bytes": reserved,
            "peak_device_bytes": self.peak_device,
            "peak_rss_bytes": max(self.peak_rss, peak_rss_bytes()),
        }
        return {key: _max(self.prior.get(key), value) for key, value in now.items()}

    def state(self) -> dict:
        """What a checkpoint keeps so that a resumed run goes on: the seconds so far, the peaks, the context."""
        return {"seconds": self.elapsed(), "cuda_context_bytes": self.cuda_context(), **self.peaks()}

    def cuda_context(self) -> int | None:
        return self.context_bytes if self.context_bytes is not None else self.prior.get("cuda_context_bytes")

    def summary(self, counted: dict) -> dict:
        """``summary.json``'s ``"memory"``: the device, the peaks, the CUDA context, the counted bytes."""
        peaks = self.peaks()
        return {
            "device": str(self.device),
            **{key: peaks[key] for key in PEAKS[:3]},
            "cuda_context_bytes": self.cuda_context(),
            "peak_rss_bytes": peaks["peak_rss_bytes"],
            "counted": counted,
        }


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)
