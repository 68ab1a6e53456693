"""Training throughput of the framework's ResNet loop vs a minimal hand-written PyTorch loop (``make bench``).

Both train the same ResNet (same seed, same initial weights) on the same images held on the device, with the
same batch size, batched crop+flip augmentation, normalisation, SGD Nesterov and cosine schedule, precision,
memory format and compilation. "Ours" is the real entrypoint's ``build`` and the shared loop ``fit`` on a real
run directory: pruning hooks (method ``none``), LR schedule, loss accounting, metrics rows every LOG_INTERVAL
steps, status file, checkpoints every CHECKPOINT_INTERVAL steps and at each epoch end, best-checkpoint saves.
Its time is ``fit``'s own count of training time (every step with its hooks, loss accounting and batch
assembly); set-up, log rows, status writes and checkpoint saves are reported separately, and evaluation (which
the minimal loop does not do) is left out. The minimal loop
is what one would write by hand: a randperm per epoch, index, augment, normalise, forward, loss, backward,
step. The two alternate in ABBA order, ``--pairs`` times each, and the ratio reported is the median of the
per-pair ratios, after one untimed run of each (the first training in a process pays one-time costs).

Images: the 3-channel digits (bundled, 32x32) by default, or any ResNet dataset (``--dataset cifar10`` on a
machine that has it). On CUDA the report adds FLOPs per image (counted by torch's FlopCounterMode) and MFU
against the GPU's dense peak from :data:`lib.monitor.PEAK_FLOPS`. Writes ``docs/benchmarks/resnet.md``
(``--out``) and a CSV beside it.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from lib import config as cfgmod
from lib.data.augment import crop_flip
from lib.errors import run_cli
from lib.monitor import peak_flops, training_flops
from lib.training import PRECISIONS
from models.resnet.train import build
from scripts.bench_common import LoopBench, device_description, loop_parser, open_run, ratio_table, sync


def _config(args: argparse.Namespace, results_dir: Path) -> cfgmod.Config:
    return cfgmod.from_defaults(
        [
            "MODEL_LENET5=n",
            f"MODEL_{args.model.upper()}=y",
            f"IMAGE_DATASET={args.dataset}",
            "OPTIMIZER_ADAMW=n",
            "OPTIMIZER_SGD=y",
            "SGD_LR=0.1",
            "SGD_NESTEROV=y",
            "LR_SCHEDULE=cosine",
            f"EPOCHS={args.epochs}",
            f"BATCH_SIZE={args.batch}",
            f"DEVICE={args.device}",
            f"PRECISION={args.precision}",
            f"CHANNELS_LAST={'y' if args.channels_last else 'n'}",
            f"COMPILE={'y' if args.compile else 'n'}",
            f"RESULTS_DIR={results_dir}",
            "MATRIX_NAME=bench",
        ],
    )


def _subset(task, images: int) -> None:
    """Train on the first ``images`` training images (0: all)."""
    if images:
        task.train_x, task.train_y = task.train_x[:images], task.train_y[:images]


def minimal(cfg: cfgmod.Config, workdir: Path, images: int) -> float:
    """Images/s of the same training as :func:`ours`, written as a plain PyTorch loop."""
    ctx = open_run(cfg, workdir, "minimal")  # seeded as the framework does, so the weights are the same
    model, task = build(ctx)  # the same model and data tensors; from here on nothing of the framework is used
    _subset(task, images)
    device = ctx.device
    model.to(device)
    x_all, y_all = task.train_x, task.train_y
    mean, std = task.mean, task.std
    fmt = torch.channels_last if cfg["CHANNELS_LAST"] else torch.contiguous_format
    model.to(memory_format=fmt)
    forward = torch.compile(model) if cfg["COMPILE"] else model
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg["SGD_WEIGHT_DECAY"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg["SGD_LR"],
        momentum=cfg["SGD_MOMENTUM"],
        nesterov=True,
        **({"fused": True} if device.type == "cuda" else {}),
    )
    batch, n = cfg["BATCH_SIZE"], x_all.shape[0]
    steps = cfg["EPOCHS"] * math.ceil(n / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    dtype = PRECISIONS[cfg["PRECISION"]]
    sync(device)
    tick = time.perf_counter()
    model.train()
    for _ in range(cfg["EPOCHS"]):
        order = torch.randperm(n, device=device)
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            xb = ((crop_flip(x_all[idx]).float() - mean) / std).contiguous(memory_format=fmt)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = F.cross_entropy(forward(xb).float(), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    sync(device)
    return n * cfg["EPOCHS"] / (time.perf_counter() - tick)


def flops_per_image(cfg: cfgmod.Config, workdir: Path) -> float:
    ctx = open_run(cfg, workdir, "flops")
    model, task = build(ctx)
    model.to(ctx.device)
    x = task._normalise(task.train_x[:8])
    return training_flops(lambda: F.cross_entropy(model(x), task.train_y[:8])) / 8


def main(argv: list[str] | None = None) -> int:
    parser = loop_parser(__doc__, "resnet", pairs=4)
    parser.add_argument("--model", default="resnet18", choices=("resnet18", "resnet50"))
    parser.add_argument("--dataset", default="digits", help="an IMAGE_DATASET value (default: digits)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=512, help="first N training images per epoch (0: all)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="fp32", choices=sorted(PRECISIONS))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args(argv)
    bench = LoopBench(
        "scripts.bench_resnet",
        build,
        lambda cfg, workdir: minimal(cfg, workdir, args.images),
        adjust=lambda task: _subset(task, args.images),
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cfg = _config(args, workdir)
        rows = bench.measure(args, cfg, workdir)
        flops = flops_per_image(cfg, workdir)
    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    peak = peak_flops(device, args.precision)
    ours_ips = statistics.median(r["ours_per_s"] for r in rows)
    mfu = ours_ips * flops / peak if peak else None
    other = statistics.median(r["other_s"] for r in rows)
    step = args.batch / ours_ips
    # At CIFAR scale: 50,000 images per epoch, two checkpoint-sized saves per epoch (checkpoint.pt, best.pt)
    # plus one every CHECKPOINT_INTERVAL steps; set-up is paid once per run.
    cifar_steps = math.ceil(50_000 / args.batch)
    desc, sha = device_description(device)
    setup = (
        f"{args.model}, {args.images or 'all'} {args.dataset} training images (32x32x3), batch {args.batch},"
        f" {args.epochs} epochs per measurement, {args.precision}, channels_last"
        f" {'on' if args.channels_last else 'off'}, torch.compile {'on' if args.compile else 'off'}; {args.pairs}"
        " pairs in ABBA order after one untimed run of each, ratio = median of per-pair ratios. The framework's"
        " time is `fit`'s own training time (train_seconds): every step with its pruning hooks, LR schedule, loss"
        " accounting, batch assembly, metric rows and status writes; evaluation and checkpoint saves are left out"
        " (the latter reported below)."
    )
    lines = [
        "# ResNet training throughput: the framework's loop vs a minimal PyTorch loop",
        "",
        bench.header(argv, desc, sha, setup),
        "",
        *ratio_table(rows, "images", 1),
        "",
        f"Training FLOPs per image (forward + backward, FlopCounterMode): {flops / 1e9:.2f} GFLOP."
        + (f" MFU: {100 * mfu:.1f}% of {peak / 1e12:.0f} TFLOP/s." if mfu is not None else " MFU: CPU, no peak."),
        "",
        f"Outside the training steps, `fit` spent a median {other:.1f} s per measurement on set-up (environment"
        f" capture, tracker), the epoch-end checkpoint and best-checkpoint saves ({args.epochs} epochs of"
        f" {math.ceil((args.images or 0) / args.batch) if args.images else 'all'} steps here). On CIFAR an"
        f" epoch is {cifar_steps} steps of ~{step:.2f} s on this machine, so even all of that time charged to one"
        f" epoch would be {100 * other / (cifar_steps * step):.2f}% of it.",
        "",
        "Target (issue 5): ours / minimal >= 0.97.",
        "",
    ]
    bench.write(args, rows, desc, sha, lines)
    return 0


if __name__ == "__main__":
    run_cli(main)
