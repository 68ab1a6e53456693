"""Cost of the memory sampler on the training step: LeNet-5 with MEMORY_SAMPLE_MS at its default vs 0 (``make bench``).

Both sides are the real entrypoint's ``build`` and the shared loop ``fit`` on a real run directory, on the
quickstart's shapes (LeNet-5, the bundled digits, batch 32, SGD Nesterov, cosine schedule, dense), differing
only in ``MEMORY_SAMPLE_MS``: the sampler's thread wakes every interval (the Kconfig default, or ``--interval-ms``)
versus no thread at all (0). At this size a step takes a few milliseconds, so a thread that held the
interpreter lock for long would show. The time is ``fit``'s own training time (``train_seconds``: every step
with its hooks and log rows, where the memory rows are drained and written). The two alternate in ABBA order,
``--pairs`` times, after one untimed run of each; the overhead is the median of the per-pair ratios of ms/step,
less one.

A pair of noisy runs cannot resolve a cost far below 1 %, so the report adds what bounds it from above: the
time one sample takes (read ``/proc/self/statm``, on a GPU also the allocator's counters and NVML), measured
``--samples`` times, over the interval: the share of wall time the thread can take from the step. Writes
``docs/benchmarks/memory.md`` (``--out``) and a CSV beside it.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lib import config as cfgmod
from lib.errors import run_cli
from lib.memory import MemorySampler
from models.lenet5.train import build
from scripts.bench_common import LoopBench, device_description, loop_parser, open_run


def _config(args: argparse.Namespace, workdir: Path, interval_ms: int) -> cfgmod.Config:
    return cfgmod.from_defaults(
        [
            "MODEL_LENET5=y",
            "OPTIMIZER_ADAMW=n",
            "OPTIMIZER_SGD=y",
            "PRUNING_MAGNITUDE=n",
            f"EPOCHS={args.epochs}",
            f"BATCH_SIZE={args.batch}",
            f"DEVICE={args.device}",
            f"MEMORY_SAMPLE_MS={interval_ms}",
            f"RESULTS_DIR={workdir}",
            "MATRIX_NAME=bench",
        ],
    )


def sample_seconds(device: torch.device, samples: int) -> float:
    """Median seconds of one sample, as the sampler's thread takes it (one row buffered each time)."""
    sampler = MemorySampler(device, 3600.0)  # a thread that will not wake while this runs
    sampler.start()
    times = []
    for _ in range(samples):
        tick = time.perf_counter()
        sampler.sample()
        times.append(time.perf_counter() - tick)
    sampler.stop()
    sampler.drain()
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = loop_parser(__doc__, "memory", pairs=16)
    parser.add_argument("--epochs", type=int, default=10, help="epochs per measurement (45 steps each)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--interval-ms", type=int, default=None, help="sampling interval (default: Kconfig's)")
    parser.add_argument("--samples", type=int, default=2000, help="samples timed for the cost of one")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args(argv)
    interval_ms = args.interval_ms if args.interval_ms is not None else cfgmod.from_defaults()["MEMORY_SAMPLE_MS"]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        on, off = _config(args, workdir, interval_ms), _config(args, workdir, 0)
        images = build(open_run(on, workdir, "count"))[1].num_train
        bench = LoopBench("scripts.bench_memory", build, lambda cfg, wd: bench.ours(off, wd)[0])
        rows = bench.measure(args, on, workdir)
        device = open_run(on, workdir, "device").device
        cost = sample_seconds(device, args.samples)
    steps = args.epochs * math.ceil(images / args.batch)
    for row in rows:
        row["sampled_ms_per_step"] = 1e3 * images * args.epochs / row["ours_per_s"] / steps
        row["unsampled_ms_per_step"] = 1e3 * images * args.epochs / row["minimal_per_s"] / steps
        row["overhead"] = row["sampled_ms_per_step"] / row["unsampled_ms_per_step"] - 1
    sampled, unsampled, overhead = (
        statistics.median(r[k] for r in rows) for k in ("sampled_ms_per_step", "unsampled_ms_per_step", "overhead")
    )
    bound = cost / (interval_ms / 1e3) if interval_ms else 0.0
    low, high = min(r["overhead"] for r in rows), max(r["overhead"] for r in rows)
    desc, sha = device_description(device)
    setup = (
        f"LeNet-5 on the {images} bundled digits training images, batch {args.batch}, SGD Nesterov, cosine"
        f" schedule, dense, {args.epochs} epochs ({steps} steps) per measurement, on {device.type}; sampled ="
        f" MEMORY_SAMPLE_MS={interval_ms}, unsampled = MEMORY_SAMPLE_MS=0 (no thread); {args.pairs} pairs in ABBA"
        " order after one untimed run of each; time per step = `fit`'s `train_seconds` / steps; overhead = median of"
        " per-pair (sampled / unsampled) - 1."
    )
    lines = [
        "# Memory sampler: its cost on the LeNet-5 training step",
        "",
        bench.header(argv, desc, sha, setup),
        "",
        "| pair | sampled (ms/step) | unsampled (ms/step) | overhead |",
        "| --- | --- | --- | --- |",
        *(
            f"| {r['pair']} | {r['sampled_ms_per_step']:.3f} | {r['unsampled_ms_per_step']:.3f} |"
            f" {100 * r['overhead']:+.2f} % |"
            for r in rows
        ),
        f"| median | {sampled:.3f} | {unsampled:.3f} | {100 * overhead:+.2f} % |",
        "",
        f"The pairs' overheads range from {100 * low:+.1f} % to {100 * high:+.1f} %: on this machine two runs of the"
        " same code differ by that much, so the median resolves a cost only down to about that spread over the"
        " square root of the pairs.",
        f"What bounds the cost from above: one sample takes a median {1e6 * cost:.1f} µs ({args.samples} timed, on"
        f" {device.type}), so at one sample every {interval_ms} ms the thread takes at most **{100 * bound:.4f} %**"
        " of the wall time from the training step (the share it can hold the interpreter)."
        if interval_ms
        else "With --interval-ms 0 neither side samples: the table is the noise floor of an A/A comparison.",
        "Target (issue 13): overhead <= 1 % of step time.",
        "",
    ]
    bench.write(args, rows, desc, sha, lines)
    return 0


if __name__ == "__main__":
    run_cli(main)
