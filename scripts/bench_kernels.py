"""Kernel speed against the dense math they replace (``make bench-kernels``).

On the CPU (always):

- ``banded_linear_fwd_bwd``: one banded MLP layer's forward + backward (dX, dW, db) on the C kernel
  (``kernels/banded/cpu.c``, the default CPU path), and ``banded_linear_fwd_bwd_torch`` on the PyTorch path
  (``kernels/banded/reference.py``), each against masked dense (the same ``nn.Linear`` computing
  ``x (W ⊙ M)ᵀ + b`` with autograd), for the GPT-2 tiny (C = 128) and small (C = 512, the published banded
  work's "GPT-2 small") MLP shapes with r = 4, FC1 (C -> 4C) and FC2 (4C -> C), at band densities near 0.44,
  0.24 and 0.12. Target (issue 15): ``0.5 / density``.
- ``gpt2_small_banded_step``, ``gpt2_tiny_banded_step``: one training step (forward, backward, AdamW step) of
  GPT-2 small or tiny (the presets, GPT-2's vocabulary) with every MLP Linear banded at density near 0.12, with
  ``KERNELS_BANDED`` (the default CPU path) against the same model computing its masked Linears densely (as
  training runs without the kernel). Reported, no target.
- ``banded_linear_decode``: one banded MLP Linear at a decoding step (1 or 4 tokens, no gradient) on the C kernel
  against ``F.linear`` on the masked weights (``make sample`` without the kernel), density near 0.12. Reported.
- ``gpt2_tiny_banded_decode``, ``gpt2_small_banded_decode``: the whole model's greedy decoding with the KV cache
  (``GPT2.generate``, 32 tokens after a 16-token prompt; the time per token), every MLP Linear banded near 0.12
  on the C kernel against masked dense. Reported.
- ``sparse_gemv``: the activation-sparse GEMV's C kernel at batch 1, fp32, against dense ``F.linear``
  (:func:`kernels.sparse_gemv.bench.cpu_rows`): the GPU rows' shapes and sparsities, target ``0.8 / (1 - s)``.

On a GPU (when CUDA is present): every kernel package's ``gpu_rows`` (``GPU_BENCHES``): the Triton and CUDA
banded matmuls against cuBLAS (target ``0.7 / density``), the activation-sparse GEMV against dense ``torch``
(``0.8 / (1 - s)``), and 2:4 Linears against dense.

Each side runs in ABBA order on the same inputs (CPU) or is timed with CUDA events and the L2 flushed (GPU);
the speedup is the median of the per-pair ratios (CPU) or the ratio of medians (GPU). Rows go to
``docs/benchmarks/kernels.csv`` (rows measured on other devices are kept, so GPU and CPU figures live side by
side) and ``kernels.md``.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from kernels.banded import BandedKernel, BandedLinear, auto_block
from kernels.banded import cpu as cpu_kernel
from kernels.runtime import interleaved, median_ratio, timed
from kernels.sparse_gemv import bench as sparse_gemv_bench
from lib.config import ROOT
from lib.errors import UserError, run_cli
from lib.pruning.patterns import band_width_for, banded_mask
from models.gpt2.model import GPT2, GPT2Config, padded_vocab
from scripts.bench_common import machine, write_rows, write_table

logger = logging.getLogger(__name__)

SHAPES = {"gpt2-tiny": 128, "gpt2-small": 512}  # n_embd C; MLP ratio r = 4
DENSITIES = (0.44, 0.24, 0.12)
STEP_DENSITY = 0.12
CPU_OPS = {"c": "banded_linear_fwd_bwd", "torch": "banded_linear_fwd_bwd_torch"}  # BANDED_KERNEL_CPU -> op
STEP_PRESETS = ("tiny", "small")  # GPT-2 presets of the training-step rows
STEP_OPS = {"c": "gpt2_{}_banded_step", "torch": "gpt2_{}_banded_step_torch"}  # BANDED_KERNEL_CPU -> op
DECODE_BATCHES = (1, 4)  # tokens per decoding step (one per sequence)
DECODE_OP = "banded_linear_decode"
GPT2_DECODE_OP = "gpt2_{}_banded_decode"  # a whole model's decoding (bench_gpt2_decode), per token
# modules with gpu_rows(quick) -> rows (op, shape, density, speedup, target, ...), run when CUDA is present
GPU_BENCHES = (
    "kernels.banded.bench",
    "kernels.banded.bench_cuda",
    "kernels.sparse_gemv.bench",
    "kernels.semi_structured.bench",
)
COLUMNS = ("op", "shape", "dtype", "density", "dense_ms", "kernel_ms", "speedup", "target", "timing")


def _masked_linear(out_features: int, in_features: int, width: int) -> nn.Linear:
    dense = nn.Linear(in_features, out_features)
    dense.register_buffer("weight_mask", banded_mask(out_features, in_features, width))
    with torch.no_grad():
        dense.weight.mul_(dense.weight_mask)
    return dense


def abba(a: Callable[[], float], b: Callable[[], float], pairs: int, warmup: int = 2) -> tuple[float, float, float]:
    """(median time of a, of b, median of the per-pair ratios a / b), each pair in alternating order
    (:func:`interleaved` of the two)."""
    times = interleaved({"a": a, "b": b}, pairs, warmup)
    return statistics.median(times["a"]), statistics.median(times["b"]), median_ratio(times["a"], times["b"])


def bench_layer(c: int, fc: str, density: float, tokens: int, pairs: int, block: int, path: str) -> dict:
    """One banded MLP Linear's forward + backward on the CPU ``path`` (BANDED_KERNEL_CPU) against masked dense."""
    out_features, in_features = (4 * c, c) if fc == "fc1" else (c, 4 * c)
    width, achieved = band_width_for(out_features, in_features, density)
    gen = torch.Generator().manual_seed(0)
    dense = _masked_linear(out_features, in_features, width)
    banded = BandedLinear(dense, block or auto_block(width), cpu=path)
    if path == "c" and (why := cpu_kernel.unavailable()):
        raise UserError(f"the banded C kernel cannot run here: {why}")
    tiles = banded.cpu_plan() if path == "c" else banded.plan()
    x = torch.randn(tokens, in_features, generator=gen)
    dy = torch.randn(tokens, out_features, generator=gen)
    # Each side gets the layouts it meets in GPT-2's MLP with both Linears banded: a banded layer returns y
    # (and dx) tokens-last, elementwise ops (GELU, its backward) keep that layout, so FC2's input and FC1's
    # output gradient arrive tokens-last; FC1's input (LayerNorm's output) and FC2's output gradient (the
    # residual stream's) are plain row-major, as every tensor is on the dense side.
    inputs = {
        False: x.t().contiguous().t() if fc == "fc2" else x.clone(),
        True: x.clone(),
    }
    grads = {False: dy.t().contiguous().t() if fc == "fc1" else dy, True: dy}
    for t in inputs.values():
        t.requires_grad_()

    def step(layer: nn.Module, masked: bool) -> float:
        x_in = inputs[masked]
        layer.weight.grad = layer.bias.grad = x_in.grad = None
        # As after an optimizer step: the weights are new, so the C kernel packs them again (its packed weights
        # are kept only while the weight is unchanged, which holds at inference, not in training).
        torch.autograd.graph.increment_version(layer.weight)
        tick = time.perf_counter()
        y = nn.functional.linear(x_in, layer.weight * layer.weight_mask, layer.bias) if masked else layer(x_in)
        y.backward(grads[masked])
        return time.perf_counter() - tick

    dense_s, banded_s, ratio = abba(lambda: step(dense, True), lambda: step(banded, False), pairs, warmup=3)
    return {
        "op": CPU_OPS[path],
        "shape": f"{fc} {tokens}x{in_features}->{out_features}",
        "model": next(k for k, v in SHAPES.items() if v == c),
        "dtype": "fp32",
        "bandwidth": width,
        "density": round(achieved, 4),
        "block": f"{tiles.fwd.rows}/{tiles.bwd.rows}" if path == "c" else banded.block,  # C: rows per fwd/bwd tile
        "tile_density": round(tiles.density, 4),
        "dense_ms": round(1e3 * dense_s, 3),
        "kernel_ms": round(1e3 * banded_s, 3),
        "speedup": round(ratio, 3),
        "target": round(0.5 / achieved, 3),
    }


def bench_decode(c: int, fc: str, batch: int, rounds: int) -> dict:
    """One banded MLP Linear at a decoding step (``batch`` tokens, no gradient) on the C kernel, against
    ``F.linear`` on the masked weights (what ``make sample`` runs without the kernel: the masks multiplied in),
    interleaved; band density near ``STEP_DENSITY``. Reported, no target."""
    out_features, in_features = (4 * c, c) if fc == "fc1" else (c, 4 * c)
    width, achieved = band_width_for(out_features, in_features, STEP_DENSITY)
    dense = _masked_linear(out_features, in_features, width)
    banded = BandedLinear(dense, auto_block(width), cpu="c")
    x = torch.randn(batch, in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # both sides compute the same thing
        torch.testing.assert_close(banded(x), nn.functional.linear(x, dense.weight, dense.bias), rtol=1e-4, atol=1e-5)

    with torch.no_grad():
        times = interleaved(
            {
                "dense": timed(lambda: nn.functional.linear(x, dense.weight, dense.bias)),
                "banded": timed(lambda: banded(x)),
            },
            rounds,
            warmup=10,
        )
    return {
        "op": DECODE_OP,
        "shape": f"{fc} {batch}x{in_features}->{out_features}",
        "model": next(k for k, v in SHAPES.items() if v == c),
        "dtype": "fp32",
        "bandwidth": width,
        "density": round(achieved, 4),
        "dense_ms": round(1e3 * statistics.median(times["dense"]), 4),
        "kernel_ms": round(1e3 * statistics.median(times["banded"]), 4),
        "speedup": round(median_ratio(times["dense"], times["banded"]), 3),
        "target": "",
    }


def band_mlps(model: GPT2, density: float) -> GPT2:
    """``model`` with every MLP Linear masked by a band near ``density`` (its ``weight_mask``), the weights zeroed
    off it: masked dense, what the banded kernel's modules compute."""
    for fc1, fc2 in model.mlp_layers():
        for linear in (fc1, fc2):
            width, _ = band_width_for(linear.out_features, linear.in_features, density)
            linear.register_buffer("weight_mask", banded_mask(linear.out_features, linear.in_features, width))
            with torch.no_grad():
                linear.weight.mul_(linear.weight_mask)
    return model


class SwappableGPT2:
    """GPT-2 of ``cfg`` (seed 0) with every MLP Linear masked by a band near ``STEP_DENSITY`` (weights zero off
    it, density :func:`banded_gpt2_density`), and for each CPU path of ``paths`` ("c", "torch") the banded
    kernel's modules for those Linears (made as ``kernels.prepare`` makes them for ``purpose``), sharing their
    parameters. :meth:`use` swaps a side's modules in ("dense": the masked dense Linears), so every side runs the
    same model, the same tensors in the same memory, and differs only in its MLP Linears: separate model
    instances differed by up to 10% in a whole GPT-2 tiny decoding with the same modules (measured)."""

    def __init__(self, cfg: GPT2Config, paths: tuple[str, ...], block: int, purpose: str) -> None:
        torch.manual_seed(0)
        self.model = model = band_mlps(GPT2(cfg), STEP_DENSITY)
        mlp = {id(m) for pair in model.mlp_layers() for m in pair}
        self.names = [name for name, m in model.named_modules() if id(m) in mlp]
        self.sides = {"dense": self._modules()}
        for path in paths:
            self.use("dense")
            kernel = BandedKernel(BandedKernel.Settings(block=block, cpu=path))
            taken = kernel.apply(model, purpose, torch.device("cpu"))
            assert len(taken) == 2 * cfg.n_layer, taken
            self.sides[path] = self._modules()
        self.use("dense")

    def _modules(self) -> dict[str, nn.Module]:
        return {name: self.model.get_submodule(name) for name in self.names}

    def use(self, side: str) -> GPT2:
        for name, module in self.sides[side].items():
            self.model.set_submodule(name, module)
        return self.model


def banded_gpt2_density(cfg: GPT2Config) -> float:
    """The achieved density of :class:`SwappableGPT2`'s bands (FC1 and FC2 share it: one is the other's
    transpose)."""
    return band_width_for(4 * cfg.n_embd, cfg.n_embd, STEP_DENSITY)[1]


def bench_gpt2_decode(preset: str, prompt: int, new_tokens: int, rounds: int) -> dict:
    """GPT-2 of ``preset`` decoding: ``GPT2.generate`` of ``new_tokens`` greedy tokens after a ``prompt``-token
    prompt, one sequence, with the key/value cache (each new token runs alone through every Linear), every MLP
    Linear banded near ``STEP_DENSITY``: the C kernel's modules against the masked dense Linears, swapped in and
    out of one model between decodings (:class:`SwappableGPT2`), interleaved; the speedup is the median
    per-round ratio. Reported, no target."""
    cfg = GPT2Config.preset(preset, vocab_size=padded_vocab(50257), dropout=0.0)
    gpt2 = SwappableGPT2(cfg, ("c",), 0, "inference")
    gpt2.model.eval()
    idx = torch.randint(cfg.vocab_size, (1, prompt), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # both sides compute the same logits
        logits = {side: gpt2.use(side)(idx) for side in gpt2.sides}
        torch.testing.assert_close(logits["c"], logits["dense"], rtol=1e-4, atol=1e-4)

    def decoder(side: str) -> Callable[[], float]:
        def decode() -> float:
            model = gpt2.use(side)
            tick = time.perf_counter()
            with torch.no_grad():
                model.generate(idx, new_tokens, temperature=0.0)
            return time.perf_counter() - tick

        return decode

    times = interleaved({side: decoder(side) for side in gpt2.sides}, rounds)
    return {
        "op": GPT2_DECODE_OP.format(preset),
        "shape": f"1x{prompt} prompt + {new_tokens} tokens, {cfg.n_layer} layers, C={cfg.n_embd}",
        "model": f"gpt2-{preset}",
        "dtype": "fp32",
        "density": round(banded_gpt2_density(cfg), 4),
        "dense_ms": round(1e3 * statistics.median(times["dense"]) / new_tokens, 3),
        "kernel_ms": round(1e3 * statistics.median(times["c"]) / new_tokens, 3),
        "speedup": round(median_ratio(times["dense"], times["c"]), 3),
        "target": "",
    }


def bench_gpt2_step(preset: str, tokens: int, rounds: int, block: int, paths: tuple[str, ...]) -> list[dict]:
    """GPT-2 of ``preset`` (small: 8 layers, C = 512, T = 512; tiny: 4 layers, C = 128, T = 256) with every MLP
    Linear banded near ``STEP_DENSITY``, ``tokens`` per step in whole sequences: one AdamW training step with
    ``KERNELS_BANDED`` on each CPU path of ``paths`` and with masked dense, each side's MLP modules swapped into
    one model with one optimizer (:class:`SwappableGPT2`), interleaved (:func:`interleaved`); a row per path, its
    speedup the median per-round ratio."""
    cfg = GPT2Config.preset(preset, vocab_size=padded_vocab(50257), dropout=0.0)
    batch = max(1, tokens // cfg.block_size)
    gpt2 = SwappableGPT2(cfg, paths, block, "train")
    achieved = banded_gpt2_density(cfg)
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(cfg.vocab_size, (batch, cfg.block_size + 1), generator=gen)
    opt = torch.optim.AdamW(gpt2.model.parameters(), lr=1e-4)  # every side's modules hold these parameters
    masked = list(gpt2.sides["dense"].values())

    def stepper(side: str) -> Callable[[], float]:
        def step() -> float:
            model = gpt2.use(side)
            tick = time.perf_counter()
            logits = model(idx[:, :-1])
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if side == "dense":  # what the pruner does after every step of a run without the kernel
                with torch.no_grad():
                    for m in masked:
                        m.weight.mul_(m.weight_mask)
            return time.perf_counter() - tick

        return step

    times = interleaved({side: stepper(side) for side in gpt2.sides}, rounds)
    return [
        {
            "op": STEP_OPS[path].format(preset),
            "shape": f"{batch}x{cfg.block_size} tokens, {cfg.n_layer} layers, C={cfg.n_embd}",
            "model": f"gpt2-{preset}",
            "dtype": "fp32",
            "density": round(achieved, 4),
            "dense_ms": round(1e3 * statistics.median(times["dense"]), 1),
            "kernel_ms": round(1e3 * statistics.median(times[path]), 1),
            "speedup": round(median_ratio(times["dense"], times[path]), 3),
            "target": "",
        }
        for path in paths
    ]


def gpu_rows(quick: bool, names: tuple[str, ...] = GPU_BENCHES) -> tuple[list[dict], list[str]]:
    """(rows, failures): each package's rows in turn; one that raises is logged with its traceback and named in
    ``failures``, and the others still run (a GPU session is short: one broken kernel must not cost the rest)."""
    rows, failures = [], []
    for name in names:
        logger.warning("GPU benchmark %s", name)
        tick = time.perf_counter()
        try:
            rows += importlib.import_module(name).gpu_rows(quick)
        except Exception as err:  # noqa: BLE001 - reported below and in the exit status
            logger.exception("GPU benchmark %s failed", name)
            failures.append(f"{name}: {type(err).__name__}: {err}".splitlines()[0])
        logger.warning("GPU benchmark %s: %.0f s", name, time.perf_counter() - tick)
    return rows, failures


def merged(path: Path, rows: list[dict]) -> list[dict]:
    """The CSV's rows, with those of each (device, op) this run measured replaced by this run's ``rows`` (which
    carry their own device, torch and git SHA): rows of other devices, and other ops of this one, are kept."""
    measured = {(r["device"], r["op"]) for r in rows}
    kept = []
    if path.exists():
        with open(path, newline="") as f:
            kept = [r for r in csv.DictReader(f) if (r.get("device"), r.get("op")) not in measured]
    return kept + rows


def targets_met(rows: list[dict]) -> list[tuple[str, str, int, int]]:
    """(device, op, rows at or above their target, rows with a target) for each (device, op) of ``rows`` that has
    targets, in order of appearance."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r.get("target") not in ("", None):
            groups.setdefault((r["device"], r["op"]), []).append(r)
    return [(*key, sum(float(r["speedup"]) >= float(r["target"]) for r in rs), len(rs)) for key, rs in groups.items()]


def table(rows: list[dict]) -> list[str]:
    def cell(row: dict, key: str) -> str:
        value = row.get(key, "")
        if key in ("speedup", "target") and value not in ("", None):
            return f"{float(value):.2f}x"
        return str(value)

    lines = ["| device | " + " | ".join(COLUMNS) + " |", "|" + " --- |" * (len(COLUMNS) + 1)]
    lines += ["| " + " | ".join([r["device"], *(cell(r, k) for k in COLUMNS)]) + " |" for r in rows]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=16 * 256, help="rows of the input (batch x sequence)")
    parser.add_argument("--pairs", type=int, default=20, help="ABBA-alternated (dense, banded) layer measurements")
    parser.add_argument("--step-rounds", type=int, default=8, help="rounds of GPT-2 steps, one per side each (0: skip)")
    parser.add_argument(
        "--step-tokens", type=int, default=2048, help="tokens per GPT-2 training step, in whole sequences"
    )
    parser.add_argument(
        "--decode-rounds", type=int, default=300, help="rounds of decoding steps per layer, C kernel (0: skip)"
    )
    parser.add_argument(
        "--model-decode-rounds", type=int, default=8, help="rounds of whole GPT-2 decodings, C kernel (0: skip)"
    )
    parser.add_argument("--decode-tokens", type=int, default=32, help="tokens each GPT-2 decoding generates")
    parser.add_argument("--gemv-rounds", type=int, default=40, help="rounds of the sparse GEMV's CPU rows (0: skip)")
    parser.add_argument(
        "--block", type=int, default=0, help="tile extent on the wide side (BANDED_KERNEL_BLOCK; 0: per layer)"
    )
    parser.add_argument("--cpu-path", action="append", choices=CPU_OPS, help="only this CPU path's rows (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions on the GPU")
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU rows (on a GPU machine)")
    parser.add_argument(
        "--report-only", action="store_true", help="measure nothing: write the .md again from the .csv's rows"
    )
    parser.add_argument(
        "--gpu-bench", action="append", choices=GPU_BENCHES, help="only this package's GPU rows (repeatable)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "kernels.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device, sha = machine()
    rows = []
    if not (args.gpu_only or args.report_only):
        rows = [
            bench_layer(c, fc, d, args.tokens, args.pairs, args.block, path)
            for path in args.cpu_path or CPU_OPS
            for c in SHAPES.values()
            for fc in ("fc1", "fc2")
            for d in DENSITIES
        ]
        if args.decode_rounds and "c" in (args.cpu_path or CPU_OPS):
            rows += [
                bench_decode(c, fc, batch, args.decode_rounds)
                for c in SHAPES.values()
                for fc in ("fc1", "fc2")
                for batch in DECODE_BATCHES
            ]
        if args.model_decode_rounds and "c" in (args.cpu_path or CPU_OPS):
            rows += [bench_gpt2_decode(p, 16, args.decode_tokens, args.model_decode_rounds) for p in STEP_PRESETS]
        if args.gemv_rounds:
            rows += sparse_gemv_bench.cpu_rows(args.gemv_rounds)
        if args.step_rounds:
            rows += [
                row
                for preset in STEP_PRESETS
                for row in bench_gpt2_step(
                    preset, args.step_tokens, args.step_rounds, args.block, tuple(args.cpu_path or CPU_OPS)
                )
            ]
    stamp = {"torch": torch.__version__, "git_sha": sha}
    gpu, failures = [], []
    if args.report_only:
        pass
    elif torch.cuda.is_available():
        gpu, failures = gpu_rows(args.quick, tuple(args.gpu_bench or GPU_BENCHES))
        name = torch.cuda.get_device_name()
        gpu = [{"device": name, **stamp, **r} for r in gpu]
    elif args.gpu_only:
        raise UserError("--gpu-only: torch sees no CUDA device here; run without it for the CPU rows")
    all_rows = merged(args.out.with_suffix(".csv"), [{"device": device, **stamp, **r} for r in rows] + gpu)
    write_rows(args.out.with_suffix(".csv"), all_rows)
    lines = [
        "# Kernels against dense",
        "",
        "Command: `make bench-kernels` (`python -m scripts.bench_kernels`; on a GPU machine `scripts/gpu_check.sh`)."
        " Each row names its device; kernels.csv adds the torch version and git SHA that measured it. CPU rows:"
        " fp32, tokens and tile extent in the shape and block columns; masked dense is the same nn.Linear"
        " computing x (W ⊙ M)ᵀ + b with autograd; the speedup is the median of the per-pair ratios of ABBA pairs"
        " (--pairs, 20 by default); GPT-2 tiny and small training steps (2048 tokens, --step-tokens): dense and each"
        " CPU path interleaved, the median per-round ratio (--step-rounds, 8); decoding (banded_linear_decode: 1 or"
        " 4 tokens, no gradient, against F.linear on the masked weights): interleaved, the median per-round ratio"
        " (--decode-rounds, 300); GPT-2 tiny and small decoding (gpt2_*_banded_decode: greedy, KV cache, 32 tokens"
        " after a 16-token prompt, ms per token): interleaved, the median per-round ratio (--model-decode-rounds,"
        " 8); sparse_gemv on"
        " the CPU: batch 1, fp32, dense F.linear and the C kernel interleaved, the median per-round ratio"
        " (--gemv-rounds, 40)."
        " GPU rows: CUDA events, the L2 flushed"
        " before every call, medians, each side"
        " replayed from a CUDA graph (`timing` cuda-graph; `eager` where capture failed: both sides eager then);"
        " kernels.csv also holds the eager medians. Targets (issue 15): banded layer on the CPU >= 0.5 / density;"
        " on a GPU banded matmul >= 0.7 / density vs cuBLAS, sparse GEMV >= 0.8 / (1 - s) vs dense torch, 2:4 > 1.",
        "",
        *[f"- {op} on {dev}: target reached on {n} of {k} rows." for dev, op, n, k in targets_met(all_rows)],
        "",
        *table(all_rows),
        "",
    ]
    if failures:
        lines += ["GPU benchmarks that failed in this run (their earlier rows, if any, are kept):", ""]
        lines += [f"- {f}" for f in failures] + [""]
    write_table(args.out, lines)
    return 1 if failures else 0


if __name__ == "__main__":
    run_cli(main)
