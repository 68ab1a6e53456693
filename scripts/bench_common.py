"""What the benchmarks share: the machine's description, the CSV and table writers, and fit timing.

Every benchmark writes its rows with the device, torch version and git SHA that produced them, and a Markdown
table under ``docs/benchmarks/``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lib import results
from lib.config import ROOT
from lib.matrix import expand
from lib.monitor import cpu_model
from lib.training import RunContext, fit

logger = logging.getLogger(__name__)


def machine() -> tuple[str, str]:
    """(device description, short git SHA) for the rows and the table header."""
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    # "-dirty": the measured code is that commit plus uncommitted changes to tracked files
    return f"{cpu_model()}, {torch.get_num_threads()} threads", sha.strip() + ("-dirty" if changed.strip() else "")


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that reproduces a benchmark's table: ``python -m <module>`` with its arguments (``argv``, or
    the process's own when it is None, as when run from the shell), quoted for a shell."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def write_csv(path: Path, rows: list[dict], device: str, sha: str) -> None:
    """One CSV row per result, each prefixed with the device, torch version and git SHA."""
    write_rows(path, [{"device": device, "torch": torch.__version__, "git_sha": sha, **row} for row in rows])


def write_rows(path: Path, rows: list[dict]) -> None:
    """Rows that carry their own device, torch and git SHA columns (rows measured on several machines), one
    column per key any row has."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list({k: None for row in rows for k in row}))
        writer.writeheader()
        writer.writerows(rows)


def write_table(path: Path, lines: list[str]) -> None:
    """The Markdown report: written to ``path`` and printed."""
    text = "\n".join(lines)
    path.write_text(text)
    print(text)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def open_run(cfg, workdir: Path, name: str | None = None):
    """A fresh run directory for the first run of ``cfg``'s matrix, opened as the entrypoints open theirs
    (seeded, threads set), so the framework's loop and a hand-written one start from the same weights."""
    spec = expand(cfg).runs[0]
    run_dir = workdir / (name or spec.run_id)
    if run_dir.exists():
        for path in run_dir.iterdir():
            path.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    results.atomic_write_json(run_dir / results.CONFIG, spec.to_json())
    return RunContext.open(run_dir, torch.get_num_threads())


def time_fit(ctx, model: nn.Module, task) -> tuple[float, float]:
    """(units per second of training, seconds spent outside the training steps) of the shared loop ``fit``.

    The rate is ``fit``'s own (``summary.json``'s throughput: every step with its hooks, loss accounting and
    batch assembly); the other seconds are set-up, log rows, status writes and checkpoint saves. Evaluation is
    excluded from both (a hand-written training loop does none)."""
    evaluate, eval_seconds = task.evaluate, [0.0]

    def timed_evaluate(m):
        tick = time.perf_counter()
        out = evaluate(m)
        eval_seconds[0] += time.perf_counter() - tick
        return out

    task.evaluate = timed_evaluate
    sync(ctx.device)
    tick = time.perf_counter()
    summary = fit(ctx, model, task)
    sync(ctx.device)
    wall = time.perf_counter() - tick - eval_seconds[0]
    return summary["throughput"], wall - summary["train_seconds"]


def abba(ours: Callable[[], tuple[float, float]], minimal: Callable[[], float], pairs: int) -> list[dict]:
    """``pairs`` measurements of (ours, minimal) in ABBA order, after one untimed run of each: the first
    training in a process pays one-time costs (thread pool, allocator growth, kernel selection)."""
    ours()
    minimal()
    rows = []
    for pair in range(pairs):
        if pair % 2:
            low = minimal()
            rate, other = ours()
        else:
            rate, other = ours()
            low = minimal()
        rows.append({"pair": pair, "ours_per_s": rate, "minimal_per_s": low, "ratio": rate / low, "other_s": other})
        logger.warning("pair %d: %s", pair, rows[-1])
    return rows


def loop_parser(doc: str, name: str, pairs: int) -> argparse.ArgumentParser:
    """The command line every loop-vs-minimal benchmark shares: ``--pairs``, ``--threads`` and ``--out``
    (``docs/benchmarks/<name>.md``, with the CSV beside it); each adds its own shape options."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=pairs, help="alternating (ours, minimal) measurements")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / f"{name}.md")
    return parser


@dataclass
class LoopBench:
    """One benchmark of the shared loop against a hand-written loop on the same model and data.

    ``build`` is the model's entrypoint builder (``(ctx) -> (model, task)``), ``minimal(cfg, workdir)`` the
    hand-written loop's units per second, ``adjust(task)`` what both do to the task first (e.g. a subset)."""

    module: str  # "scripts.bench_lenet5": named in the report's command line
    build: Callable
    minimal: Callable[..., float]
    adjust: Callable[[object], None] = lambda task: None

    def ours(self, cfg, workdir: Path) -> tuple[float, float]:
        """(units/s of training, seconds outside the steps) of the real entrypoint's ``build`` and ``fit``."""
        ctx = open_run(cfg, workdir)
        model, task = self.build(ctx)
        self.adjust(task)
        return time_fit(ctx, model, task)

    def measure(self, args: argparse.Namespace, cfg, workdir: Path) -> list[dict]:
        logging.basicConfig(level=logging.WARNING)
        if args.threads:
            torch.set_num_threads(args.threads)
        return abba(lambda: self.ours(cfg, workdir), lambda: self.minimal(cfg, workdir), args.pairs)

    def header(self, argv: list[str] | None, desc: str, sha: str, setup: str) -> str:
        """The report's first paragraph: the command, the machine, torch, git, and the setup in words."""
        command = f"Command: `{command_line(self.module, argv)}`"
        return f"{command} (run by `make bench`). Machine: {desc}; torch {torch.__version__}; git {sha}. Setup: {setup}"

    def write(self, args: argparse.Namespace, rows: list[dict], desc: str, sha: str, lines: list[str]) -> None:
        write_csv(args.out.with_suffix(".csv"), rows, desc, sha)
        write_table(args.out, lines)


def ratio_table(rows: list[dict], unit: str, digits: int) -> list[str]:
    """Per-pair rates of both loops and their ratio, then the medians (the ratio's in bold)."""
    medians = [statistics.median(r[k] for r in rows) for k in ("ours_per_s", "minimal_per_s", "ratio")]
    return [
        f"| pair | ours ({unit}/s) | minimal ({unit}/s) | ours / minimal |",
        "| --- | --- | --- | --- |",
        *(
            f"| {r['pair']} | {r['ours_per_s']:.{digits}f} | {r['minimal_per_s']:.{digits}f} | {r['ratio']:.3f} |"
            for r in rows
        ),
        f"| median | {medians[0]:.{digits}f} | {medians[1]:.{digits}f} | **{medians[2]:.3f}** |",
    ]


def device_description(device: torch.device) -> tuple[str, str]:
    """:func:`machine`, with the GPU's name in front on CUDA."""
    desc, sha = machine()
    if device.type == "cuda":
        desc = f"{torch.cuda.get_device_name(device)}; host {desc}"
    return desc, sha
