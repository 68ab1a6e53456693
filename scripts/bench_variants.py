"""Training speed of each GPT-2 variant against plain GPT-2 at the same shape (``python -m scripts.bench_variants``).

The published claim "reciprocal attention: 2.17% faster at zero cost" is a speed claim; the matrix's tokens/s
compare runs made at different times, on a machine that may be busy. Here each variant of a defconfig's matrix
(its runs with seed and optimizer set aside: reciprocal attention, the reciprocal MLP, the MLP ratio, MLA, KV
pruning, in any combination it plans) trains side by side with plain GPT-2 of the same size, batch and block, in
ABBA order after one untimed measurement of each: ``--steps`` training steps (forward, cross-entropy, backward,
AdamW step) on random tokens, the model built from the run's own config as the entrypoint builds it
(:func:`models.gpt2.train.model_config`), on CUDA when there is a GPU (in the run's precision) and else on the
CPU. The ratio is the median over pairs of variant tokens/s over plain tokens/s; FLOPs per token are the model's
own count (:meth:`models.gpt2.model.GPT2.flops_per_token`). Writes ``docs/benchmarks/gpt2_variants.md`` (``--out``)
and a CSV beside it.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from lib import config as cfgmod
from lib.config import ROOT
from lib.errors import UserError, run_cli
from lib.matrix import expand
from lib.training import PRECISIONS
from models.gpt2 import VARIANT_AXES
from models.gpt2.model import GPT2
from models.gpt2.train import model_config
from scripts.bench_common import abba, command_line, device_description, sync, write_csv, write_table

BYTE_VOCAB = 257  # the byte tokenizer's; the vocabulary only sizes the embedding and the head


def variants(cfg: cfgmod.Config) -> list[tuple[str, dict, cfgmod.Config]]:
    """(label, axes, run config) of each distinct GPT-2 variant ``cfg``'s matrix plans, plain first: the label
    joins the variant axes' run-id labels ("raexact-rmlp"), "plain" where every one is at its plain value (the
    matrix must plan that run, the reference)."""
    found: dict[str, tuple[str, dict, cfgmod.Config]] = {}
    for spec in expand(cfg).runs:
        if spec.axes["model"] != "gpt2":
            continue
        label = "-".join(filter(None, (axis.label(spec.axes[axis.name]) for axis in VARIANT_AXES))) or "plain"
        found.setdefault(label, (label, dict(spec.axes), spec.cfg))
    if "plain" not in found:
        raise UserError("the matrix plans no plain GPT-2 run to compare the variants with; add one (e.g. the defaults)")
    return [found.pop("plain"), *found.values()]


def train_rate(model: GPT2, batch: int, steps: int, device: torch.device, dtype) -> float:
    """Tokens per second of ``steps`` training steps of ``model`` on random tokens (after the caller's warm-up)."""
    block = model.config.block_size
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator(device="cpu").manual_seed(0)
    data = torch.randint(model.config.vocab_size, (steps, batch, block + 1), generator=gen).to(device)
    model.train()
    sync(device)
    tick = time.perf_counter()
    for step in range(steps):
        x, y = data[step, :, :-1], data[step, :, 1:]
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    return steps * batch * block / (time.perf_counter() - tick)


def measure(cfg: cfgmod.Config, steps: int, pairs: int, device: torch.device) -> list[dict]:
    (plain_label, plain_axes, plain_cfg), *others = variants(cfg)
    dtype = PRECISIONS[plain_cfg["PRECISION"]] if device.type == "cuda" else None
    batch = plain_cfg["BATCH_SIZE"]

    def build(run_cfg, axes) -> GPT2:
        torch.manual_seed(0)
        return GPT2(model_config(run_cfg, axes, BYTE_VOCAB)).to(device)

    plain = build(plain_cfg, plain_axes)
    rows = []
    for label, axes, run_cfg in others:
        model = build(run_cfg, axes)
        pairs_rows = abba(
            lambda m=model: (train_rate(m, batch, steps, device, dtype), 0.0),
            lambda: train_rate(plain, batch, steps, device, dtype),
            pairs,
        )
        ratios = [r["ratio"] for r in pairs_rows]
        rows.append(
            {
                "variant": label,
                "params": model.num_params(),
                "plain_params": plain.num_params(),
                "flops_per_token": model.flops_per_token(),
                "plain_flops_per_token": plain.flops_per_token(),
                "tokens_per_s": round(statistics.median(r["ours_per_s"] for r in pairs_rows), 1),
                "plain_tokens_per_s": round(statistics.median(r["minimal_per_s"] for r in pairs_rows), 1),
                "speed_ratio": round(statistics.median(ratios), 4),
                "ratio_min": round(min(ratios), 4),
                "ratio_max": round(max(ratios), 4),
                "pairs": pairs,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defconfig", default="gpt2-reciprocal-ablation", help="whose matrix's variants to time")
    parser.add_argument("--set", default="", help="overrides on top of it: 'SYM=VALUE ...' (e.g. GPT2_SIZE=124m)")
    parser.add_argument("--steps", type=int, default=8, help="training steps per measurement")
    parser.add_argument("--pairs", type=int, default=6, help="ABBA pairs per variant")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "gpt2_variants.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = cfgmod.DEFCONFIGS / args.defconfig
    cfg = cfgmod.load(path, cfgmod.split_overrides(args.set))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = measure(cfg, args.steps, args.pairs, device)
    desc, sha = device_description(device)
    write_csv(args.out.with_suffix(".csv"), rows, desc, sha)
    command = command_line("scripts.bench_variants", argv)
    lines = [
        "# GPT-2 variants: training speed against plain GPT-2",
        "",
        f"Command: `{command}`. Machine: {desc}; torch {torch.__version__}; git {sha}. Defconfig "
        f"{args.defconfig}{' with ' + args.set if args.set else ''}: {args.steps} training steps of "
        f"{cfg['BATCH_SIZE']} sequences per measurement, {args.pairs} ABBA pairs per variant; the ratio is the "
        "median of the per-pair ratios (variant tokens/s over plain tokens/s), with the range over pairs.",
        "",
        "| variant | params (plain) | FLOPs/token (plain) | tokens/s (plain) | speed vs plain | range |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {r['variant']} | {r['params']:,} ({r['plain_params']:,}) | {r['flops_per_token'] / 1e6:.2f}M "
            f"({r['plain_flops_per_token'] / 1e6:.2f}M) | {r['tokens_per_s']:,.0f} ({r['plain_tokens_per_s']:,.0f}) "
            f"| **{r['speed_ratio']:.3f}×** | {r['ratio_min']:.3f}–{r['ratio_max']:.3f} |"
            for r in rows
        ),
        "",
    ]
    write_table(args.out, lines)
    return 0


if __name__ == "__main__":
    run_cli(main)
