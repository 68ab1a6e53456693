"""Check the run's device memory against nvidia-smi: a short ResNet-18 run on a GPU (needs one).

The run trains through the shared loop ``fit`` on a real run directory, its memory sampler on (NVML, every
``--sample-ms``). Meanwhile a thread of this script asks ``nvidia-smi --query-compute-apps=pid,used_memory
--format=csv`` for this process's memory just as often and keeps the largest figure. The script prints the
summary's ``peak_device_bytes`` beside nvidia-smi's peak, their relative difference, and the allocator's
peaks and the CUDA context for scale; it writes the same as ``docs/benchmarks/gpu_memory.md`` (``--out``) with
the device name, and exits 1 when the difference exceeds ``--tolerance``. Both read the driver's per-process
figure, at different instants, so they should agree within a few percent; the allocator's peak is expected to
be lower by the CUDA context and library workspaces.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from lib import config as cfgmod
from lib.config import ROOT
from lib.errors import UserError, run_cli
from lib.training import fit
from models.resnet.train import build
from scripts.bench_common import device_description, open_run

MIB = 1 << 20


def smi_used_bytes(pid: int) -> int | None:
    """This process's device memory as nvidia-smi reports it (summed over GPUs), or None when not listed."""
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    used = [int(mib) * MIB for p, mib in (line.split(",") for line in out.splitlines() if "," in line) if int(p) == pid]
    return sum(used) if used else None


class SmiPeak(threading.Thread):
    """Polls nvidia-smi every ``interval`` seconds until stopped; ``peak`` is the largest figure seen."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak: int | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            used = smi_used_bytes(self.pid)
            if used is not None:
                self.peak = max(self.peak or 0, used)


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.0f}"


def _config(args: argparse.Namespace, results_dir: Path) -> cfgmod.Config:
    return cfgmod.from_defaults(
        [
            "MODEL_LENET5=n",
            "MODEL_RESNET18=y",
            f"IMAGE_DATASET={args.dataset}",
            "OPTIMIZER_ADAMW=n",
            "OPTIMIZER_SGD=y",
            "PRUNING_MAGNITUDE=n",
            f"EPOCHS={args.epochs}",
            f"BATCH_SIZE={args.batch}",
            "DEVICE=cuda",
            f"MEMORY_SAMPLE_MS={args.sample_ms}",
            f"RESULTS_DIR={results_dir}",
            "MATRIX_NAME=gpu-memory",
        ],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits", help="an IMAGE_DATASET value (default: the bundled digits)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--sample-ms", type=int, default=100, help="sampling interval of both monitors")
    parser.add_argument("--tolerance", type=float, default=0.05, help="largest relative difference accepted")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "gpu_memory.md")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() or shutil.which("nvidia-smi") is None:
        raise UserError("check_gpu_memory needs an NVIDIA GPU and nvidia-smi; run it on a machine that has both")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(args, Path(tmp))
        ctx = open_run(cfg, Path(tmp))
        model, task = build(ctx)
        smi = SmiPeak(os.getpid(), args.sample_ms / 1e3)
        smi.start()
        try:
            memory = fit(ctx, model, task)["memory"]
        finally:
            smi.stopping.set()
            smi.join()
    ours, theirs = memory["peak_device_bytes"], smi.peak
    if ours is None or theirs is None:
        raise UserError(
            f"no per-process figure (NVML: {ours}, nvidia-smi: {theirs}): in a container without the host's PID "
            "namespace the driver lists host pids; run it where the training process's pid is the driver's"
        )
    diff = (ours - theirs) / theirs
    desc, sha = device_description(ctx.device)
    lines = [
        "# Device memory of a run: NVML (the run's summary) vs nvidia-smi",
        "",
        f"Command: `python -m scripts.check_gpu_memory {' '.join(argv or [])}`".rstrip()
        + f". Machine: {desc}; torch {torch.__version__}; git {sha}. ResNet-18 on {args.dataset}, batch"
        f" {args.batch}, {args.epochs} epochs, both sampled every {args.sample_ms} ms.",
        "",
        "| figure | MiB |",
        "| --- | --- |",
        f"| peak_device_bytes (NVML, the summary) | {ours / MIB:.0f} |",
        f"| nvidia-smi peak for the process | {theirs / MIB:.0f} |",
        f"| relative difference | {100 * diff:+.2f} % |",
        f"| peak_reserved_bytes (allocator) | {memory['peak_reserved_bytes'] / MIB:.0f} |",
        f"| peak_allocated_bytes (allocator) | {memory['peak_allocated_bytes'] / MIB:.0f} |",
        f"| cuda_context_bytes | {_mib(memory['cuda_context_bytes'])} |",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if abs(diff) <= args.tolerance else 1


if __name__ == "__main__":
    run_cli(main)
