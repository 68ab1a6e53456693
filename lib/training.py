"""The shared training loop, used by every model entrypoint.

A model's ``train.py`` only builds ``(model, task)`` from the run's config; everything else happens here, the
same way for every model: device selection, seeding, the optimizer and LR schedule from their registries,
the pruning hook from its registry, evaluation every epoch, atomic checkpoints every N steps and at every
epoch end, metrics, peak memory, the tracker, and the run's ``status.json`` / ``summary.json``.

Exact resume. A checkpoint holds the model (with its bool masks), optimizer, LR schedule and pruner state,
every RNG (Python, NumPy, torch CPU and CUDA), the position in the data (epoch and batch; batch order is a
function of seed and epoch only), the best result so far, the time and samples so far, and how many rows of
``metrics.jsonl`` existed. On resume the metrics file is cut back to that many rows and the lost steps are
replayed. On CPU, with the same thread count (kept in the checkpoint), the result is bit-identical to a run
that was never interrupted. Checkpoints are written and read by :mod:`lib.checkpoint` (tensors and plain values
only, the previous one kept for when the newest is damaged).

Stopping. SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 set a flag (:class:`lib.process.StopRequest`); at the next step boundary
the loop saves a checkpoint and the process exits with status 130 and state "interrupted", so the runner and
``make continue`` resume it exactly. Under DDP the ranks agree on the step to stop at: the next log row (or
period end), where the loop synchronises anyway, so no step pays for a collective of its own.

Parts. This module opens a run (:class:`RunContext`) and records how it ends (:func:`run_training`); the loop
itself is :class:`lib.trainer.Trainer` (state, periods, evaluation, summary), each step
:func:`lib.step.train_step`, the checkpoint of a run :func:`lib.checkpoint.save_training` /
:func:`lib.checkpoint.resume_training`, and what differs under DDP :class:`lib.ranks.Ranks`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

from lib import checkpoint, results
from lib.config import ROOT, Config
from lib.errors import UserError
from lib.process import StopRequest, die_with_parent
from lib.ranks import Ranks, join_process_group
from lib.spec import RunSpec
from lib.trainer import Interrupted, NonFiniteLoss, Trainer, identity

logger = logging.getLogger(__name__)


def select_device(choice: str) -> torch.device:
    """``DEVICE``: auto = CUDA, else Apple MPS, else CPU; an explicit choice that is absent is an error."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("DEVICE=cuda but no CUDA device is visible; choose DEVICE=auto or DEVICE=cpu")
    if choice == "mps" and not has_mps:
        raise UserError("DEVICE=mps but Apple MPS is not available; choose DEVICE=auto or DEVICE=cpu")
    return torch.device(choice)


@dataclass
class RunContext:
    """A run directory opened for training: its spec, typed config, device and thread count."""

    run_dir: Path
    spec: RunSpec
    device: torch.device
    threads: int
    rank: int = 0  # DDP: this process's rank; only rank 0 writes anything
    world: int = 1
    stop: StopRequest | None = None  # set by a stop signal; the loop checkpoints and ends at a step boundary

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def ranks(self) -> Ranks:
        return Ranks(self.rank, self.world, self.device)

    @property
    def cfg(self) -> Config:
        return self.spec.cfg

    @property
    def data_dir(self) -> Path:
        path = Path(self.cfg["DATA_DIR"])
        return path if path.is_absolute() else ROOT / path

    @classmethod
    def open(cls, run_dir: Path, threads: int | None) -> RunContext:
        config = results.read_json(run_dir / results.CONFIG)
        if config is None:
            raise UserError(f"{run_dir / results.CONFIG} not found: a run directory is made by `make`")
        spec = RunSpec.from_json(config)
        env = results.read_json(run_dir / results.ENV)
        if checkpoint.exists(run_dir / results.CHECKPOINT) and env:
            # Same intra-op thread count as before the interruption, so reductions add up the same way.
            threads = env["torch_threads"]
        threads = threads or torch.get_num_threads()
        torch.set_num_threads(threads)
        # Seeded before the entrypoint builds anything, so weight initialisation is a function of the seed.
        seed_everything(spec.axes["seed"])
        device = select_device(spec.cfg["DEVICE"])
        rank, world = join_process_group(device)
        if world > 1 and device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        return cls(run_dir, spec, device, threads, rank, world)


# PRECISION_<NAME> -> the autocast dtype (None: no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Speed:
    """The knobs of the "Speed" menu: autocast precision, TF32, cuDNN autotuning, channels_last, compile.

    :meth:`prepare` applies them to the model and the task and returns the module to call for forward
    passes (compiled or not); the plain module keeps the parameters, the masks and the checkpoint's keys.
    """

    precision: str = "fp32"
    tf32: bool = True
    cudnn_benchmark: bool = True
    channels_last: bool = False
    compile: bool = False

    @classmethod
    def from_config(cls, cfg: Config) -> Speed:
        return cls(cfg["PRECISION"], cfg["TF32"], cfg["CUDNN_BENCHMARK"], cfg["CHANNELS_LAST"], cfg["COMPILE"])

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The context forward passes run in; fp32 needs none (entered on every micro-batch, so it costs nothing)."""
        dtype = PRECISIONS[self.precision]
        return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)

    def prepare(self, model: nn.Module, task, device: torch.device) -> nn.Module:
        if device.type == "cuda":
            if PRECISIONS[self.precision] is torch.bfloat16 and not torch.cuda.is_bf16_supported():
                raise UserError(
                    f"PRECISION=bf16 but {torch.cuda.get_device_name(device)} has no bf16 support; "
                    "choose PRECISION=fp32"
                )
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
            task.memory_format = torch.channels_last
        return torch.compile(model) if self.compile else model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fit(ctx: RunContext, model: nn.Module, task) -> dict:
    """Train ``model`` on ``task`` as the run's config says, resuming from its checkpoint if there is one;
    returns the summary (``{}`` on DDP ranks other than 0). The loop's parts are in :mod:`lib.trainer`."""
    return Trainer(ctx, model, task, Speed.from_config(ctx.cfg)).fit()


def _fail(run_dir: Path, spec: RunSpec | None, reason: str) -> None:
    """Record a failure in status.json and summary.json; checkpoints are left as they are. Under DDP only
    rank 0 records."""
    if int(os.environ.get("RANK", "0")):
        return
    status = results.read_json(run_dir / results.STATUS, {})
    results.atomic_write_json(run_dir / results.STATUS, {**status, "state": "failed", "reason": reason})
    if spec is not None:
        results.atomic_write_json(
            run_dir / results.SUMMARY,
            {
                **identity(spec),
                "status": "failed",
                "reason": reason,
                "final": None,
                "best": None,
            },
        )


def entrypoint_args(description: str | None, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--run-dir", type=Path, required=True, help="the run directory (made by `make`)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op CPU threads (default: torch's); a resumed run keeps its first value",
    )
    return parser.parse_args(argv)


def run_training(
    build: Callable[[RunContext], tuple[nn.Module, Any]],
    description: str | None,
    argv: list[str] | None = None,
    after: Callable[[Path, Callable[[], bool]], object] | None = None,
) -> NoReturn:
    """A model entrypoint's ``main``: open the run, build, fit; every failure is recorded in the run dir.

    ``after(run_dir, stop_requested)``: the entrypoint's stage after training (GPT-2: one-shot pruning), run by
    rank 0 once training is over, in this process, so the run exits 0 only when it is done too. It must be
    idempotent (a resumed run calls it again) and raise :class:`lib.trainer.Interrupted` between its parts when
    ``stop_requested()``.

    Exit status: 0 done, 1 the run failed (reason in status.json), 2 a user error, 130 interrupted.
    """
    rank = int(os.environ.get("RANK", "0"))  # under torchrun; only rank 0 logs and records
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    die_with_parent()  # a killed runner (or torchrun) takes this process with it; exit if it is already gone
    stop = StopRequest().install()  # SIGINT/SIGTERM/SIGUSR1/SIGUSR2: checkpoint at the next step boundary, then exit
    args = entrypoint_args(description, argv)
    run_dir = args.run_dir.resolve()
    config = results.read_json(run_dir / results.CONFIG)
    spec = RunSpec.from_json(config) if config else None  # so even a failure in open() is recorded
    try:
        ctx = RunContext.open(run_dir, args.threads)
        ctx.stop = stop
        model, task = build(ctx)
        fit(ctx, model, task)
        ctx.ranks.finish()
        if after is not None and ctx.ranks.main:
            del model, task  # the stage loads what it needs from the run directory
            after(run_dir, lambda: stop.requested)
    except UserError as e:
        if spec is not None:
            _fail(run_dir, spec, str(e))
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLoss as e:
        _fail(run_dir, spec, str(e))
        logger.error("%s", e)
        sys.exit(1)
    except torch.OutOfMemoryError as e:
        _fail(run_dir, spec, "out of memory: " + str(e).splitlines()[0])
        logger.error("out of memory")
        sys.exit(1)
    except (KeyboardInterrupt, Interrupted):
        status = results.read_json(run_dir / results.STATUS, {})
        if (run_dir / results.CONFIG).exists():
            results.atomic_write_json(run_dir / results.STATUS, {**status, "state": "interrupted"})
        sys.exit(130)
    except Exception as e:
        traceback.print_exc()
        _fail(run_dir, spec, f"{type(e).__name__}: {e}".splitlines()[0])
        sys.exit(1)
    sys.exit(0)
