"""Kernel speed against the dense math they replace (``make bench-kernels``).

Banded (``kernels/banded``): one banded MLP layer's forward + backward (dX, dW, db) on the CPU, the
block-banded reference against masked dense (the same ``nn.Linear`` computing ``x (W ⊙ M)ᵀ + b`` with
autograd), for GPT-2 tiny (C = 128) and small (C = 512) MLP shapes with r = 4, FC1 (C -> 4C) and FC2
(4C -> C), at band densities near 0.44, 0.24 and 0.12 (the band width whose mask density is nearest; the
achieved density is reported). Both run in ABBA order on the same input and output gradient; the speedup
is the median of the per-pair ratios. The issue's target is ``0.5 / density``. Writes
``docs/benchmarks/kernels.csv`` and ``kernels.md``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from kernels.banded.reference import BandedLinear
from lib.config import ROOT
from lib.errors import run_cli
from lib.pruning.patterns import band_density, banded_mask
from scripts.bench_common import machine, write_csv, write_table

logger = logging.getLogger(__name__)

SHAPES = {"gpt2-tiny": 128, "gpt2-small": 512}  # n_embd C; MLP ratio r = 4
DENSITIES = (0.44, 0.24, 0.12)


def bandwidth_for(out_features: int, in_features: int, density: float) -> tuple[int, float]:
    """The band width whose mask density is nearest ``density``, and that density."""
    wide = max(out_features, in_features)
    best = min(range(1, 2 * wide), key=lambda w: abs(band_density(banded_mask(out_features, in_features, w)) - density))
    return best, band_density(banded_mask(out_features, in_features, best))


def _step(layer: nn.Module, x: torch.Tensor, dy: torch.Tensor, masked: bool) -> float:
    layer.weight.grad = layer.bias.grad = x.grad = None
    tick = time.perf_counter()
    y = nn.functional.linear(x, layer.weight * layer.weight_mask, layer.bias) if masked else layer(x)
    y.backward(dy)
    return time.perf_counter() - tick


def bench(c: int, fc: str, density: float, tokens: int, pairs: int, block: int) -> dict:
    out_features, in_features = (4 * c, c) if fc == "fc1" else (c, 4 * c)
    width, achieved = bandwidth_for(out_features, in_features, density)
    gen = torch.Generator().manual_seed(0)
    dense = nn.Linear(in_features, out_features)
    dense.register_buffer("weight_mask", banded_mask(out_features, in_features, width))
    with torch.no_grad():
        dense.weight.mul_(dense.weight_mask)
    banded = BandedLinear(dense, block)
    x = torch.randn(tokens, in_features, generator=gen).requires_grad_()
    dy = torch.randn(tokens, out_features, generator=gen)
    for _ in range(3):  # warm-up: thread pool, allocator, the plan
        _step(dense, x, dy, True)
        _step(banded, x, dy, False)
    ratios, t_dense, t_banded = [], [], []
    for pair in range(pairs):
        order = (True, False) if pair % 2 == 0 else (False, True)
        times = {masked: _step(dense if masked else banded, x, dy, masked) for masked in order}
        t_dense.append(times[True])
        t_banded.append(times[False])
        ratios.append(times[True] / times[False])
    return {
        "op": "banded_linear_fwd_bwd",
        "shape": f"{fc} {tokens}x{in_features}->{out_features}",
        "model": next(k for k, v in SHAPES.items() if v == c),
        "bandwidth": width,
        "density": round(achieved, 4),
        "tile_density": round(banded.plan().density, 4),
        "dense_ms": round(1e3 * statistics.median(t_dense), 3),
        "banded_ms": round(1e3 * statistics.median(t_banded), 3),
        "speedup": round(statistics.median(ratios), 3),
        "target": round(0.5 / achieved, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=16 * 256, help="rows of the input (batch x sequence)")
    parser.add_argument("--pairs", type=int, default=20, help="ABBA-alternated (dense, banded) measurements")
    parser.add_argument("--block", type=int, default=32, help="tile extent on the wide side (BANDED_KERNEL_BLOCK)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "kernels.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [
        bench(c, fc, d, args.tokens, args.pairs, args.block)
        for c in SHAPES.values()
        for fc in ("fc1", "fc2")
        for d in DENSITIES
    ]
    device, sha = machine()
    write_csv(args.out.with_suffix(".csv"), rows, device, sha)
    met = sum(r["speedup"] >= r["target"] for r in rows)
    lines = [
        "# Kernels against dense",
        "",
        f"Command: `make bench-kernels` (`python -m scripts.bench_kernels {' '.join(argv or [])}`). Machine: {device};"
        f" torch {torch.__version__}; git {sha}. Banded layer forward + backward (dX, dW, db), fp32, {args.tokens}"
        f" tokens, tile extent {args.block}; masked dense is the same nn.Linear computing x (W ⊙ M)ᵀ + b; median of"
        f" {args.pairs} ABBA pairs of the per-pair ratio. Target (issue 15): speedup >= 0.5 / density.",
        "",
        "| model | shape | band width | density | tile FLOP share | dense (ms) | banded (ms) | speedup | target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['model']} | {r['shape']} | {r['bandwidth']} | {r['density']:.3f} | {r['tile_density']:.3f} |"
            f" {r['dense_ms']:.2f} | {r['banded_ms']:.2f} | {r['speedup']:.2f}x | {r['target']:.2f}x |"
            for r in rows
        ),
        "",
        f"Target reached on {met} of {len(rows)} rows.",
        "",
    ]
    write_table(args.out, lines)
    return 0


if __name__ == "__main__":
    run_cli(main)
