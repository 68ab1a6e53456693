"""What produced a run and what it cost: environment capture (git, versions, hardware) and peak memory."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from lib.memory import peak_rss_bytes
from lib.process import usable_cpus

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:
        return None


def installed_packages() -> dict[str, str]:
    """Every installed distribution's version, by name (sorted); of a package installed twice, the one found
    first on ``sys.path`` (the one imported).

    Name and version are read from the metadata's header lines alone: 5 ms for 88 packages, where parsing
    each whole file (``dist.metadata``, long descriptions included) takes 50 ms."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        header = _metadata_header(dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "")
        if "Name" in header:  # a broken install can leave a metadata directory without one
            found.setdefault(header["Name"], header.get("Version", ""))
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def _metadata_header(text: str) -> dict[str, str]:
    """``Name`` and ``Version`` from core metadata (RFC 822 headers, up to the first blank line)."""
    header = {}
    for line in text.split("\n\n", 1)[0].splitlines():  # the body (a long description) is not read
        if not line.strip():
            break
        key, _, value = line.partition(":")
        if key in ("Name", "Version"):
            header[key] = value.strip()
    return header


def environment(device: torch.device) -> dict:
    """Git SHA and dirty diff, Python and library versions (every installed package), CPU and GPU model."""
    sha = _git("rev-parse", "HEAD")
    diff = _git("diff", "HEAD")
    env = {
        "git_sha": sha.strip() if sha else None,
        "git_dirty": bool(diff),
        "git_diff": diff or "",
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "triton": _version("triton"),
        "numpy": _version("numpy"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),  # affinity and cgroup quota: what the thread count was derived from
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": None,
        "cuda": torch.version.cuda,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "packages": installed_packages(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        env["gpu"] = "Apple MPS"
    return env


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak CUDA memory allocated on a GPU; peak resident set size of this process on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    if device.type == "mps":
        return int(torch.mps.driver_allocated_memory())
    return peak_rss_bytes()


# Dense peak tensor-core throughput (FLOP/s, no 2:4 sparsity) by GPU name, from NVIDIA's datasheets: bf16, and
# fp32 matmuls run as TF32. The first key contained in torch.cuda.get_device_name() wins, so the more specific
# names come first. MFU is reported only for GPUs listed here.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"bf16": 756e12, "tf32": 378e12},
    "H100 NVL": {"bf16": 835e12, "tf32": 418e12},
    "H100": {"bf16": 989e12, "tf32": 495e12},  # SXM5
    "H200": {"bf16": 989e12, "tf32": 495e12},
    "GH200": {"bf16": 989e12, "tf32": 495e12},
    "B200": {"bf16": 2250e12, "tf32": 1100e12},
    "A100": {"bf16": 312e12, "tf32": 156e12},
    "L40S": {"bf16": 362e12, "tf32": 183e12},
    "L4": {"bf16": 121e12, "tf32": 60e12},
    "A10G": {"bf16": 70e12, "tf32": 35e12},
    "A10": {"bf16": 125e12, "tf32": 62.5e12},
    "RTX 4090": {"bf16": 165e12, "tf32": 82.6e12},
    "RTX 3090": {"bf16": 71e12, "tf32": 35.6e12},
}


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak for ``precision`` ("bf16", or "fp32" counted at the TF32 rate), or None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_FLOPS.items():
        if key in name:
            return peaks["bf16" if precision == "bf16" else "tf32"]
    return None


def training_flops(step: Callable[[], torch.Tensor]) -> int:
    """FLOPs of one forward + backward, counted by torch's FlopCounterMode while ``step`` runs them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step().backward()
    return counter.get_total_flops()
