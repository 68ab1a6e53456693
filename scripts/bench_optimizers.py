"""Optimizer step time and optimizer-state bytes on GPT-2 124M's parameters (``make bench``).

The parameters are the framework's GPT-2 ``124m`` preset (models/gpt2; vocabulary padded to 50304, head tied
to the token embedding; 124.5M parameters). Gradients are random and fixed; no forward pass is run, so the
numbers isolate the optimizer. For each optimizer: warm-up steps, then the median wall time of the measured
steps, and the bytes of every tensor in the optimizer state (plus masks for AdamWPrune).

AdamWPrune is AdamW + the ``state`` pruner driven by the training loop's own update (:func:`lib.step.update`,
the part of a step after backward): gradients masked before the step (AdamW is elementwise, so pruned weights
and moments stay exactly zero without re-masking; see ``Pruner.attach``); the masks are recomputed (bitter0
scores, exact global threshold) every ``--interval`` steps, reported separately and amortised. Writes a CSV
row per optimizer and a Markdown table.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from lib.config import ROOT
from lib.errors import run_cli
from lib.pruning import PRUNERS
from lib.pruning.schedule import ScheduleSettings
from lib.pruning.state import StateSettings
from lib.step import update
from models.gpt2.model import GPT2, GPT2Config
from scripts.bench_common import machine, write_csv, write_table

logger = logging.getLogger(__name__)


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(
        v.numel() * v.element_size()
        for s in optimizer.state.values()
        for v in s.values()
        if torch.is_tensor(v) and v.dim() > 0
    )


def _groups(model: nn.Module) -> list[dict]:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]


class Subject:
    """One optimizer (and pruner) over its own GPT-2 124M with fixed random gradients."""

    def __init__(self, kind: str, interval: int) -> None:
        torch.manual_seed(0)
        self.kind = kind
        self.model = GPT2(GPT2Config.preset("124m"))
        for p in self.model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        self.optimizer = torch.optim.AdamW(_groups(self.model), lr=6e-4, betas=(0.9, 0.95), eps=1e-8)
        self.pruner = None
        if kind == "adamwprune":
            settings = StateSettings(
                target=0.5,
                variant="bitter0",
                schedule=ScheduleSettings(shape="cubic", start_percent=0, end_percent=100, interval=interval),
                exclude_head=True,  # the head (lm_head, tied to the token embedding) stays dense, as in training
            )
            self.pruner = PRUNERS["state"](self.model, settings, total_steps=10**9)
            self.pruner.prepare()
            self.pruner.attach(self.optimizer, elementwise=True)
        self.times: list[float] = []

    @torch.no_grad()
    def step(self, record: bool) -> None:
        tick = time.perf_counter()
        # the loop's step without its backward (the gradients are fixed); the schedule's next mask update is
        # beyond the measured steps
        update(self.model, self.optimizer, self.pruner)
        if record:
            self.times.append(time.perf_counter() - tick)

    def row(self) -> dict:
        row = {
            "optimizer": self.kind,
            "params": sum(p.numel() for p in self.model.parameters()),
            "step_seconds": statistics.median(self.times),
            "state_bytes": _state_bytes(self.optimizer),
            "mask_bytes": 0,
            "prunable": 0,
            "mask_update_seconds": 0.0,
        }
        if self.pruner is not None:
            modules = self.pruner.modules
            row["mask_bytes"] = sum(m.weight_mask.numel() * m.weight_mask.element_size() for _, m in modules)
            row["prunable"] = sum(m.weight.numel() for _, m in modules)
            tick = time.perf_counter()
            self.pruner.update_mask(0.5)
            row["mask_update_seconds"] = time.perf_counter() - tick
        return row


def bench(steps: int, warmup: int, interval: int) -> list[dict]:
    """Steps of the two subjects alternate, so that machine noise lands on both alike."""
    subjects = [Subject("adamw", interval), Subject("adamwprune", interval)]
    for i in range(warmup + steps):
        for subject in subjects:
            subject.step(record=i >= warmup)
    return [s.row() for s in subjects]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="measured steps per optimizer")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured steps first")
    parser.add_argument("--interval", type=int, default=100, help="AdamWPrune mask-update interval (steps)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "optimizers.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info("benchmarking AdamW and AdamWPrune, %d + %d alternating steps each ...", args.warmup, args.steps)
    rows = bench(args.steps, args.warmup, args.interval)
    adamw, prune = rows
    amortised = prune["step_seconds"] + prune["mask_update_seconds"] / args.interval
    device, sha = machine()
    write_csv(args.out.with_suffix(".csv"), rows, device, sha)
    extra = prune["state_bytes"] + prune["mask_bytes"] - adamw["state_bytes"]
    prune_mib = (prune["state_bytes"] + prune["mask_bytes"]) / 2**20
    lines = [
        "# Optimizer step time and state (GPT-2 124M)",
        "",
        f"Command: `make bench` (`python -m scripts.bench_optimizers`). Machine: {device}; torch {torch.__version__};"
        f" {platform.python_implementation()} {platform.python_version()}; git {sha}.",
        f"{adamw['params'] / 1e6:.1f}M parameters, {prune['prunable'] / 1e6:.1f}M prunable (Linear weights);"
        f" median of {args.steps} steps after {args.warmup} warm-up steps, the two optimizers' steps alternating.",
        "",
        "| optimizer | step (s) | ratio vs AdamW | state (MiB) | extra state vs AdamW |",
        "| --- | --- | --- | --- | --- |",
        f"| AdamW | {adamw['step_seconds']:.3f} | 1.00 | {adamw['state_bytes'] / 2**20:.1f} | — |",
        f"| AdamWPrune (between mask updates: gradients masked) | {prune['step_seconds']:.3f} |"
        f" {prune['step_seconds'] / adamw['step_seconds']:.2f} | {prune_mib:.1f}"
        f" | {extra} B = {extra / prune['prunable']:.3f} B per prunable weight |",
        f"| AdamWPrune (mask update every {args.interval} steps, amortised) | {amortised:.3f} |"
        f" {amortised / adamw['step_seconds']:.2f} | | |",
        "",
        f"One mask update (bitter0 scores, exact global threshold over all prunable weights, one layer's scores"
        f" at a time) took {prune['mask_update_seconds']:.2f} s.",
        "Targets (issue): step <= 1.15x AdamW; state <= AdamW's + 1 byte per prunable weight + O(1).",
        "",
    ]
    write_table(args.out, lines)
    return 0


if __name__ == "__main__":
    run_cli(main)
