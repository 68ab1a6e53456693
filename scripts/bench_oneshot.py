"""Time of the one-shot pruning methods on one GPT-2-small FC1 layer (``python -m scripts.bench_oneshot``).

The layer is GPT-2 small's first MLP projection, ``c_fc``: 768 inputs -> 3072 outputs, a torch Linear weight of
shape (out, in) = (3072, 768); SparseGPT's Hessian is 768 x 768 and it sweeps the 768 input columns in blocks of
128. The calibration set is ``--sequences`` sequences of ``--seq-len`` tokens (default 128 x 2048, the SparseGPT
paper's), of RANDOM inputs (no model or data is needed): per token ``x = (z A) * s`` with ``z`` standard normal,
``A`` a fixed random mixing (identity plus a Gaussian, so inputs are correlated) and ``s`` fixed log-normal
per-input scales (so input norms differ, as in real activations). The weight is random too, N(0, 0.02²).

Timed separately: accumulating the statistics, sequence by sequence (``LayerStats.add``: the input norms for
Wanda; norms and ``XᵀX`` for SparseGPT; input generation excluded), and each method's ``prune`` at 50 %
unstructured and at 2:4 (one untimed call, then the median of ``--repeats``). Also reported: the relative output
error on the calibration set, ``‖(W - Ŵ)X‖ / ‖WX‖``, read from the Hessian. Writes ``docs/benchmarks/oneshot.md``
(``--out``) and a CSV beside it, with the device, torch version and git SHA.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import torch

from lib.config import ROOT
from lib.errors import run_cli
from lib.oneshot import ONESHOT, LayerStats
from lib.progress import Meter
from scripts.bench_common import command_line, device_description, sync, write_csv, write_table

METHODS = ("magnitude", "wanda", "sparsegpt")  # baseline first
PATTERNS = {"50%": None, "2:4": (2, 4)}


def calibrate(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, dict[bool, LayerStats], dict]:
    """(weight, stats with and without the Hessian, seconds each took to accumulate) on random inputs."""
    gen = torch.Generator(device).manual_seed(args.seed)
    d, c = args.in_features, args.out_features
    weight = 0.02 * torch.randn(c, d, generator=gen, device=device)  # (out, in)
    mixing = torch.eye(d, device=device) + torch.randn(d, d, generator=gen, device=device) / d**0.5  # (in, in)
    scales = torch.randn(d, generator=gen, device=device).exp()  # (in,)
    stats = {hessian: LayerStats(d, device, hessian=hessian) for hessian in (False, True)}
    seconds = dict.fromkeys(stats, 0.0)
    meter = Meter("calibration", "sequences")
    for _ in range(args.sequences):
        x = (torch.randn(args.seq_len, d, generator=gen, device=device) @ mixing) * scales  # (T, in)
        for hessian, s in stats.items():
            sync(device)
            tick = time.perf_counter()
            s.add(x)
            sync(device)
            seconds[hessian] += time.perf_counter() - tick
        meter.update(1)
    meter.close()
    return weight, stats, seconds


def relative_error(weight: torch.Tensor, pruned: torch.Tensor, hessian: torch.Tensor) -> float:
    """``‖(W - Ŵ)X‖ / ‖WX‖`` from ``H = 2XXᵀ/N``: ``‖ΔW X‖² = (N/2) tr(ΔW H ΔWᵀ)``, the N/2 cancels."""
    h, w, delta = hessian.double(), weight.double(), (weight - pruned).double()
    return float(((delta @ h) * delta).sum().sqrt() / ((w @ h) * w).sum().sqrt())


def time_prune(name: str, weight, stats, pattern, repeats: int, device: torch.device) -> tuple[float, torch.Tensor]:
    """(median seconds of ``repeats`` timed calls after one untimed, the pruned weight)."""
    method = ONESHOT[name]()
    pruned, _ = method.prune(weight, stats, 0.5, pattern)
    times = []
    for _ in range(repeats):
        sync(device)
        tick = time.perf_counter()
        pruned, _ = method.prune(weight, stats, 0.5, pattern)
        sync(device)
        times.append(time.perf_counter() - tick)
    return statistics.median(times), pruned


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=128, help="calibration sequences")
    parser.add_argument("--seq-len", type=int, default=2048, help="tokens per calibration sequence")
    parser.add_argument("--in-features", type=int, default=768, help="layer inputs (GPT-2 small: n_embd)")
    parser.add_argument("--out-features", type=int, default=3072, help="layer outputs (GPT-2 small FC1: 4 n_embd)")
    parser.add_argument("--repeats", type=int, default=3, help="timed prune calls per method and pattern")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "oneshot.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    weight, stats, stats_seconds = calibrate(args, device)
    hessian = stats[True].hessian
    rows = []
    for name in METHODS:
        needs_hessian = ONESHOT[name].NEEDS_HESSIAN
        for label, pattern in PATTERNS.items():
            prune_s, pruned = time_prune(name, weight, stats[needs_hessian], pattern, args.repeats, device)
            rows.append(
                {
                    "method": name,
                    "pattern": label,
                    "layer": f"{args.in_features}->{args.out_features}",
                    "tokens": stats[True].tokens,
                    "stats": "none" if name == "magnitude" else "norms + Hessian" if needs_hessian else "norms",
                    "stats_s": 0.0 if name == "magnitude" else stats_seconds[needs_hessian],
                    "prune_s": prune_s,
                    "sparsity": float((pruned == 0).float().mean()),
                    "rel_output_error": relative_error(weight, pruned, hessian),
                }
            )
    desc, sha = device_description(device)
    write_csv(args.out.with_suffix(".csv"), rows, desc, sha)
    command = command_line("scripts.bench_oneshot", argv)
    lines = [
        "# One-shot pruning: time per layer",
        "",
        f"Command: `{command}`. Machine: {desc}; torch {torch.__version__}; git {sha}. One GPT-2-small FC1 layer,"
        f" {args.in_features} inputs -> {args.out_features} outputs (weight {args.out_features} x"
        f" {args.in_features}), {args.sequences} calibration sequences x {args.seq_len} tokens of random correlated"
        " inputs (see the script's docstring). Statistics: accumulation over all sequences (magnitude needs none);"
        f" prune: median of {args.repeats} calls after one untimed; error: ‖(W - Ŵ)X‖ / ‖WX‖ on the calibration"
        " tokens.",
        "",
        "| method | pattern | statistics | accumulate (s) | prune (s) | sparsity | relative output error |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['method']} | {r['pattern']} | {r['stats']} |"
            f" {r['stats_s']:.2f} | {r['prune_s']:.3f} | {r['sparsity']:.3f} | {r['rel_output_error']:.4f} |"
            for r in rows
        ),
        "",
    ]
    write_table(args.out, lines)
    return 0


if __name__ == "__main__":
    run_cli(main)
