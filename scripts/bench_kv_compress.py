"""KV compression's cost and saving on a trained GPT-2 run (``python -m scripts.bench_kv_compress RUN``).

For each (method, rank, keys too?) setting, PCA and the monotone spline + PCA alike: the run's best checkpoint,
:class:`kernels.kv_compress.KVCompressKernel` fitted on ``make sample``'s calibration windows of the validation
text and applied, then the validation perplexity on ``make sample``'s perplexity windows before and after, the
worst round-trip error of any layer and projection on the calibration windows, and the KV cache's bytes after a
prefill of one full context, measured on the cache's tensors (:func:`kernels.kv_compress.cache_bytes`). Rows go to
``docs/benchmarks/kv_compress.csv`` and a table to ``kv_compress.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from kernels.kv_compress import KVCompressKernel, cache_bytes
from lib.config import ROOT
from lib.errors import run_cli
from scripts.bench_common import machine, write_csv, write_table
from scripts.sample import load_run, validation_task

SETTINGS = ((32, False), (16, False), (8, False), (4, False), (16, True), (8, True), (4, True))
METHODS = ("pca", "spline_pca")


def measure(run: Path, rank: int, keys: bool, method: str) -> dict:
    model, _, spec = load_run(run)
    head = model.config.n_embd // model.config.n_head
    task = validation_task(spec, model.config.block_size, torch.device("cpu"))
    calibration, _ = next(task.batches(spec.axes["seed"], 0, steps=1))
    context = calibration[:1, : model.config.block_size]
    before, bytes_before = task.evaluate(model)["perplexity"], cache_bytes(model, context)
    kernel = KVCompressKernel(KVCompressKernel.Settings(rank=min(rank, head), keys=keys, method=method))
    kernel.calibrate(model, calibration)
    kernel.apply(model, "inference", torch.device("cpu"))
    after, bytes_after = task.evaluate(model)["perplexity"], cache_bytes(model, context)
    return {
        "run": run.name,
        "method": method,
        "rank": min(rank, head),
        "head_dim": head,
        "keys": keys,
        "perplexity_before": round(before, 4),
        "perplexity_after": round(after, 4),
        "change_pct": round(100 * (after / before - 1), 2),
        "round_trip_error": round(max(max(e.values()) for e in kernel.errors.values()), 4),
        "cache_bytes_before": bytes_before,
        "cache_bytes_after": bytes_after,
        "cache_ratio": round(bytes_after / bytes_before, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a GPT-2 run directory")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "kv_compress.md")
    args = parser.parse_args(argv)
    rows = [measure(args.run, rank, keys, method) for rank, keys in SETTINGS for method in METHODS]
    device, sha = machine()
    write_csv(args.out.with_suffix(".csv"), rows, device, sha)
    columns = ["method", "rank", "head_dim", "keys", "perplexity_before", "perplexity_after", "change_pct",
               "round_trip_error", "cache_bytes_before", "cache_bytes_after", "cache_ratio"]  # fmt: skip
    lines = [
        "# KV compression: perplexity cost and cache bytes",
        "",
        f"Command: `python -m scripts.bench_kv_compress {args.run}`. Machine: {device}; torch {torch.__version__};"
        f" git {sha}. Run: {args.run.name}. Perplexity on make sample's validation windows; cache bytes measured"
        " after a prefill of one full context (one sequence).",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + " --- |" * len(columns),
        *("| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows),
        "",
    ]
    write_table(args.out, lines)
    return 0


if __name__ == "__main__":
    run_cli(main)
