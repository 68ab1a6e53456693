"""Training speed of the framework's loop vs a minimal hand-written PyTorch loop on LeNet-5 (``make bench``).

The quickstart's shapes: LeNet-5 on the bundled digits (1437 training images, 8x8 upscaled to 32x32, one
channel), batch 32, SGD Nesterov with the cosine schedule, dense. At this size a step takes milliseconds, so
whatever the loop does around the step (hooks, loss accounting, metric rows, status writes, stop checks)
shows; this benchmark is the one that catches it. "Ours" is the real entrypoint's ``build`` and the shared loop
``fit`` on a real run directory, timed two ways: by ``fit``'s own training time (the steps), and by all it
does but evaluation (the steps plus set-up, log rows, status writes and checkpoints; see
:func:`scripts.bench_common.time_fit`). The minimal loop is what one would write by hand on the same
tensors: a randperm per epoch, index, normalise, forward, loss, backward, step, schedule. The two alternate in
ABBA order, ``--pairs`` times, after one untimed run of each; the ratio is the median of per-pair ratios.
Writes ``docs/benchmarks/lenet5.md`` (``--out``) and a CSV beside it.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from lib import config as cfgmod
from lib.config import ROOT
from lib.errors import run_cli
from models.lenet5.train import build
from scripts.bench_common import abba, machine, open_run, sync, time_fit, write_csv, write_table

logger = logging.getLogger(__name__)


def _config(args: argparse.Namespace, workdir: Path) -> cfgmod.Config:
    return cfgmod.from_defaults(
        [
            "MODEL_LENET5=y",
            "OPTIMIZER_ADAMW=n",
            "OPTIMIZER_SGD=y",
            "PRUNING_MAGNITUDE=n",
            f"EPOCHS={args.epochs}",
            f"BATCH_SIZE={args.batch}",
            "DEVICE=cpu",
            f"RESULTS_DIR={workdir}",
            "MATRIX_NAME=bench",
        ],
    )


def ours(cfg: cfgmod.Config, workdir: Path) -> tuple[float, float]:
    ctx = open_run(cfg, workdir)
    model, task = build(ctx)
    return time_fit(ctx, model, task)


def minimal(cfg: cfgmod.Config, workdir: Path) -> float:
    """Images/s of the same training written as a plain PyTorch loop."""
    ctx = open_run(cfg, workdir, "minimal")  # seeded as the framework does: the same initial weights
    model, task = build(ctx)  # the same model and data tensors; nothing of the framework is used from here on
    device = ctx.device
    model.to(device)
    x_all, y_all, mean, std = task.train_x, task.train_y, task.mean, task.std
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg["SGD_WEIGHT_DECAY"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg["SGD_LR"],
        momentum=cfg["SGD_MOMENTUM"],
        nesterov=cfg["SGD_NESTEROV"],
    )
    batch, n = cfg["BATCH_SIZE"], x_all.shape[0]
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg["EPOCHS"] * math.ceil(n / batch))
    sync(device)
    tick = time.perf_counter()
    model.train()
    for _ in range(cfg["EPOCHS"]):
        order = torch.randperm(n, device=device)
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            loss = F.cross_entropy(model((x_all[idx].float() - mean) / std), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    sync(device)
    return n * cfg["EPOCHS"] / (time.perf_counter() - tick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per measurement")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=8, help="alternating (ours, minimal) measurements")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "lenet5.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cfg = _config(args, workdir)
        images = build(open_run(cfg, workdir, "count"))[1].num_train
        rows = abba(lambda: ours(cfg, workdir), lambda: minimal(cfg, workdir), args.pairs)
    steps = args.epochs * math.ceil(images / args.batch)
    for row in rows:  # milliseconds per optimizer step, the unit the issue states its target in
        row["ours_ms_per_step"] = 1e3 * images * args.epochs / row["ours_per_s"] / steps
        row["minimal_ms_per_step"] = 1e3 * images * args.epochs / row["minimal_per_s"] / steps
        # everything but evaluation: set-up, log rows, status writes and checkpoints spread over the steps
        row["ours_wall_ms_per_step"] = row["ours_ms_per_step"] + 1e3 * row["other_s"] / steps
        row["wall_ratio"] = row["minimal_ms_per_step"] / row["ours_wall_ms_per_step"]
    ours_ms, min_ms, ratio, wall_ms, wall_ratio = (
        statistics.median(r[key] for r in rows)
        for key in ("ours_ms_per_step", "minimal_ms_per_step", "ratio", "ours_wall_ms_per_step", "wall_ratio")
    )
    desc, sha = machine()
    write_csv(args.out.with_suffix(".csv"), rows, desc, sha)
    lines = [
        "# LeNet-5 training speed: the framework's loop vs a minimal PyTorch loop",
        "",
        f"Command: `python -m scripts.bench_lenet5 {' '.join(argv or [])}`".rstrip() + " (run by `make bench`)."
        f" Machine: {desc}; torch {torch.__version__}; git {sha}. Setup: the quickstart's shapes (LeNet-5, the"
        f" {images} bundled digits training images, batch {args.batch}, SGD Nesterov, cosine schedule, dense,"
        f" LOG_INTERVAL {cfg['LOG_INTERVAL']}), {args.epochs} epochs ({steps} steps) per measurement;"
        f" {args.pairs} pairs in ABBA order after one untimed run of each; ratio = median of per-pair ratios of"
        ' steps/s. "Steps" is `fit`\'s own training time (`train_seconds`: every step with its hooks, loss'
        ' accounting and batch assembly); "whole" adds everything else `fit` does but evaluation (set-up,'
        " log rows, status writes, checkpoint and best-checkpoint saves at every epoch end), spread over the"
        " steps.",
        "",
        "| pair | ours, steps (ms/step) | ours, whole (ms/step) | minimal (ms/step) | steps: ours / minimal"
        " (steps/s) | whole: ours / minimal |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['pair']} | {r['ours_ms_per_step']:.2f} | {r['ours_wall_ms_per_step']:.2f} |"
            f" {r['minimal_ms_per_step']:.2f} | {r['ratio']:.3f} | {r['wall_ratio']:.3f} |"
            for r in rows
        ),
        f"| median | {ours_ms:.2f} | {wall_ms:.2f} | {min_ms:.2f} | **{ratio:.3f}** | **{wall_ratio:.3f}** |",
        "",
        "Target: ours / minimal >= 0.9.",
        "",
    ]
    write_table(args.out, lines)
    return 0


if __name__ == "__main__":
    run_cli(main)
