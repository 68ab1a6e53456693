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

Stopping. SIGINT, SIGTERM and SIGUSR1 set a flag (:class:`lib.process.StopRequest`); at the next step boundary
the loop saves a checkpoint and the process exits with status 130 and state "interrupted", so the runner and
``make continue`` resume it exactly. Under DDP the ranks agree on the step to stop at.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import sys
import time
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
from lib.matrix import RunSpec
from lib.monitor import environment, peak_flops, peak_memory_bytes, reset_peak_memory
from lib.optimizers import OPTIMIZERS, set_peak_lr
from lib.optimizers.schedules import LRSchedule
from lib.process import StopRequest, die_with_parent
from lib.pruning import PRUNERS
from lib.pruning.base import sparsity_of
from lib.tracking import TRACKERS

logger = logging.getLogger(__name__)

STATUS_EVERY_SECONDS = 1.0


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite: the run fails with this reason."""


class Interrupted(Exception):
    """A stop signal arrived; the run saved a checkpoint at a step boundary and stops, resumable."""


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
        rank, world = _init_distributed(device)
        if world > 1 and device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        return cls(run_dir, spec, device, threads, rank, world)


def _init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size): torchrun's environment, with the process group joined (NCCL on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world


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

    def autocast(self, device: torch.device):
        dtype = PRECISIONS[self.precision]
        return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

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


class StatusWriter:
    """``status.json``: the live state the runner's progress bars read; written at most once a second (by
    rank 0 only, under DDP)."""

    def __init__(self, path: Path, total_steps: int, enabled: bool = True) -> None:
        self.path = path
        self.total_steps = total_steps
        self.enabled = enabled
        self.last = 0.0

    def write(self, state: str, step: int, force: bool = False, **extra: Any) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if force or now - self.last >= STATUS_EVERY_SECONDS:
            self.last = now
            results.atomic_write_json(
                self.path, {"state": state, "step": step, "total_steps": self.total_steps, **extra}
            )


def fit(ctx: RunContext, model: nn.Module, task) -> dict:
    """Train ``model`` on ``task`` as the run's config says, resuming from its checkpoint if there is one."""
    cfg, spec, device, run_dir = ctx.cfg, ctx.spec, ctx.device, ctx.run_dir
    axes = spec.axes
    seed = axes["seed"]
    pruner_cls = PRUNERS[axes["pruning"]]
    variant = axes.get("variant")
    # Training is a sequence of periods (epochs for images, EVAL_INTERVAL steps for tokens), each ending with
    # an evaluation and a checkpoint; "epoch" below counts periods, "batch" the steps done in the current one.
    periods = task.periods(cfg, pruner_cls.budget_scale(cfg, variant))
    epochs = len(periods)
    total_steps = sum(periods)
    metric = task.metric

    def improved(new: float, best: float) -> bool:
        return new > best if task.metric_mode == "max" else new < best

    model.to(device)
    speed = Speed.from_config(cfg)
    forward = speed.prepare(model, task, device)
    pruner = pruner_cls(model, cfg, axes["target_sparsity"], total_steps, variant=variant, axes=axes)
    pruner.prepare()
    train_forward = forward
    if ctx.world > 1:  # DDP: gradients averaged over the processes during backward
        from torch.nn.parallel import DistributedDataParallel

        train_forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
    setup = OPTIMIZERS[axes["optimizer"]](model, cfg)
    optimizer = setup.optimizer
    if axes.get("lr"):
        set_peak_lr(optimizer, axes["lr"])
    pruner.attach(optimizer, setup.elementwise)
    schedule = LRSchedule(optimizer, total_steps, cfg, setup.schedule)

    paths = {name: run_dir / name for name in (results.CHECKPOINT, results.METRICS, results.STATUS)}
    state = {
        "step": 0,
        "epoch": 0,
        "batch": 0,
        "best": None,
        "train_seconds": 0.0,
        "samples": 0,
        "metric_rows": 0,
        "peak_memory_bytes": 0,
        "last_eval": None,
        "loss_sum": 0.0,
        "loss_count": 0,
    }
    ckpt = checkpoint.load_for_resume(paths[results.CHECKPOINT], map_location=device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        pruner.load_state_dict(ckpt["pruner"])
        checkpoint.set_rng_state(ckpt["rng"])
        state.update(ckpt["state"])
        if not ctx.main:  # the saved partial loss sum is the mean over ranks: rank 0 alone carries it on
            state["loss_sum"] = 0.0
        elif ctx.world > 1:
            state["loss_sum"] *= ctx.world
        if ctx.main:
            rows = results.read_jsonl(paths[results.METRICS])[: state["metric_rows"]]
            results.write_jsonl(paths[results.METRICS], rows)
            env = results.read_json(run_dir / results.ENV, {})
            env.setdefault("resumed", []).append(
                {"at_step": state["step"], "time": time.time(), **_short_env(environment(device))}
            )
            results.atomic_write_json(run_dir / results.ENV, env)
        logger.info(
            "resumed %s at step %d/%d (epoch %d, batch %d)",
            spec.run_id,
            state["step"],
            total_steps,
            state["epoch"],
            state["batch"],
        )
    elif ctx.main:
        results.write_jsonl(paths[results.METRICS], [])
        results.atomic_write_json(run_dir / results.ENV, {**environment(device), "world_size": ctx.world})
        logger.info(
            "starting %s: %d steps (%d evaluation periods) on %s, %d threads",
            spec.run_id,
            total_steps,
            epochs,
            device,
            ctx.threads,
        )

    tracker = TRACKERS[cfg["TRACKER"] if ctx.main else "none"](
        cfg["TRACKER_PROJECT"], f"{spec.matrix}/{spec.run_id}", spec.to_json()
    )
    status = StatusWriter(paths[results.STATUS], total_steps, enabled=ctx.main)
    status.write("running", state["step"], force=True)
    reset_peak_memory(device)

    def log_rows(rows: list[dict]) -> None:
        if not ctx.main:
            return
        results.append_jsonl(paths[results.METRICS], rows)
        state["metric_rows"] += len(rows)
        for row in rows:
            tracker.log(row, row["step"])

    def save_checkpoint() -> None:
        # The running sum of the loss since the last log row, so a resumed run logs the same numbers.
        state["loss_sum"], state["loss_count"] = _mean_over_ranks(loss_sum, ctx.world).item(), loss_count
        if not ctx.main:
            return
        state["peak_memory_bytes"] = max(state["peak_memory_bytes"], peak_memory_bytes(device))
        checkpoint.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "pruner": pruner.state_dict(),
                "rng": checkpoint.rng_state(),
                "state": dict(state),
                "threads": ctx.threads,
                "run_id": spec.run_id,
            },
            paths[results.CHECKPOINT],
            keep_previous=True,
        )

    def stop(where: str) -> NoReturn:
        reason = ctx.stop.name if ctx.stop and ctx.stop.requested else "a stop signal on another rank"
        logger.info("%s: checkpoint saved %s at step %d; `make continue` resumes the run", reason, where, state["step"])
        if ctx.world > 1:  # no rank leaves (and has torchrun stop the others) before rank 0 has saved
            import torch.distributed as dist

            dist.barrier()
        raise Interrupted(reason)

    model.train()
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    loss_sum = torch.tensor(state["loss_sum"], dtype=torch.float64, device=device)
    loss_count = state["loss_count"]
    for epoch in range(state["epoch"], epochs):
        tick = time.perf_counter()
        for batch in task.batches(seed, epoch, state["batch"], periods[epoch]):
            optimizer.zero_grad(set_to_none=True)
            micro_batches = task.micro_batches(batch)
            if len(micro_batches) % ctx.world:
                raise UserError(
                    f"DDP_PROCS={ctx.world} needs a multiple of {ctx.world} micro-batches per step, this task has "
                    f"{len(micro_batches)}; raise GPT2_GRAD_ACCUM or lower DDP_PROCS"
                )
            mine = micro_batches[ctx.rank :: ctx.world]  # DDP: this rank's share of the global batch
            loss = None
            for i, micro in enumerate(mine):  # gradient accumulation: the mean of the micro-batch gradients
                sync = ctx.world == 1 or i == len(mine) - 1  # DDP averages gradients once, on the last one
                with contextlib.nullcontext() if sync else train_forward.no_sync():
                    with speed.autocast(device):
                        part = task.loss(train_forward, micro) / len(mine)
                    part.backward()
                loss = part.detach() if loss is None else loss + part.detach()
            pruner.before_step()
            if setup.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), setup.clip_grad_norm)
            optimizer.step()
            pruner.after_step()
            schedule.step()
            state["step"] += 1
            state["batch"] += 1
            state["samples"] += task.units(batch)
            nonfinite |= ~torch.isfinite(loss)
            loss_sum += loss.double()
            loss_count += 1
            step = state["step"]
            if step % cfg["LOG_INTERVAL"] == 0 or state["batch"] == periods[epoch]:
                if bool(_any_over_ranks(nonfinite, ctx.world)):
                    raise NonFiniteLoss(f"non-finite training loss at or before step {step}")
                state["train_seconds"] += time.perf_counter() - tick
                log_rows(
                    [
                        {
                            "split": "train",
                            "step": step,
                            **task.progress(step),
                            "loss": _mean_over_ranks(loss_sum, ctx.world).item() / loss_count,
                            "lr": schedule.get_last_lr(),
                            "sparsity": sparsity_of(model, cfg),
                        }
                    ]
                )
                loss_sum.zero_()
                loss_count = 0
                status.write("running", step)
                tick = time.perf_counter()
            mid_period = state["batch"] < periods[epoch]  # a period's last step ends with its own checkpoint
            stopping = mid_period and _stop_requested(ctx)
            if mid_period and (step % cfg["CHECKPOINT_INTERVAL"] == 0 or stopping):
                state["train_seconds"] += time.perf_counter() - tick
                save_checkpoint()
                tick = time.perf_counter()
            if stopping:
                stop("mid-period")
        state["train_seconds"] += time.perf_counter() - tick
        if not ctx.main:  # rank 0 evaluates and saves; the others meet it in save_checkpoint's collective
            state["epoch"], state["batch"] = epoch + 1, 0
            save_checkpoint()
            if epoch + 1 < epochs and _stop_requested(ctx):
                stop("at the period's end")
            continue

        with speed.autocast(device):
            evaluation = task.evaluate(forward)
        state["last_eval"] = evaluation
        log_rows([{"split": "eval", "step": state["step"], **task.progress(state["step"]), **evaluation}])
        if state["best"] is None or improved(evaluation[metric], state["best"][metric]):
            state["best"] = {**evaluation, "step": state["step"]}
            checkpoint.save(
                {"model": model.state_dict(), "step": state["step"], "eval": evaluation},
                run_dir / results.BEST_CHECKPOINT,
            )
        logger.info(
            "period %d/%d step %d/%d: %s",
            epoch + 1,
            epochs,
            state["step"],
            total_steps,
            ", ".join(f"{k} {v:.4f}" for k, v in evaluation.items()),
        )
        state["epoch"], state["batch"] = epoch + 1, 0
        save_checkpoint()
        status.write("running", state["step"], force=True)
        if epoch + 1 < epochs and _stop_requested(ctx):
            stop("at the period's end")

    if not ctx.main:
        return {}
    summary = {
        **_identity(spec),
        "world_size": ctx.world,
        "status": "done",
        "reason": None,
        "metric": metric,
        "metric_mode": task.metric_mode,
        "final": state["last_eval"],
        "best": state["best"],
        "sparsity": sparsity_of(model, cfg),
        "layer_sparsity": pruner.layer_sparsity(),
        "mask_bytes": pruner.mask_bytes(),
        "pruning_seconds": pruner.seconds,
        "train_seconds": state["train_seconds"],
        "peak_memory_bytes": max(state["peak_memory_bytes"], peak_memory_bytes(device)),
        "throughput": state["samples"] / state["train_seconds"] if state["train_seconds"] else None,
        "throughput_unit": f"{task.unit}/s",
        "mfu": _mfu(model, task, state, device, speed),
        "steps": state["step"],
        "epochs": epochs,
    }
    results.atomic_write_json(run_dir / results.SUMMARY, summary)
    status.write("done", state["step"], force=True)
    tracker.finish()
    return summary


def _mfu(model: nn.Module, task, state: dict, device: torch.device, speed: Speed) -> float | None:
    """Model FLOPs utilisation: training FLOPs per second over the device's dense peak, for models that know
    their FLOPs per token (GPT-2: 6N + 12·L·C·T) on a GPU listed in :data:`lib.monitor.PEAK_FLOPS`."""
    flops = getattr(model, "flops_per_token", None)
    peak = peak_flops(device, speed.precision)
    if flops is None or task.unit != "tokens" or not peak or not state["train_seconds"]:
        return None
    return state["samples"] / state["train_seconds"] * flops() / peak


def _stop_requested(ctx: RunContext) -> bool:
    """Whether to stop at this step boundary: a stop signal reached this process (under DDP: any rank, so
    that every rank stops at the same step; a collective, every rank calls it)."""
    flag = ctx.stop is not None and ctx.stop.requested
    if ctx.world == 1:
        return flag
    return bool(_any_over_ranks(torch.tensor(flag, device=ctx.device), ctx.world))


def _mean_over_ranks(value: torch.Tensor, world: int) -> torch.Tensor:
    """``value`` averaged over the DDP processes (itself without DDP); a collective: every rank calls it."""
    if world == 1:
        return value
    import torch.distributed as dist

    total = value.clone()
    dist.all_reduce(total)
    return total / world


def _any_over_ranks(flag: torch.Tensor, world: int) -> torch.Tensor:
    if world == 1:
        return flag
    import torch.distributed as dist

    total = flag.to(torch.int32)
    dist.all_reduce(total, op=dist.ReduceOp.MAX)
    return total.bool()


def _short_env(env: dict) -> dict:
    return {k: env[k] for k in ("git_sha", "git_dirty", "torch", "device", "gpu", "torch_threads")}


def _identity(spec: RunSpec) -> dict:
    # One top-level key per matrix axis (model, optimizer, pruning, target_sparsity, seed, and any axis a
    # later matrix adds), plus the axes again as one dict for code that iterates over them.
    return {"run_id": spec.run_id, **spec.axes, "axes": dict(spec.axes)}


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
                **_identity(spec),
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
) -> NoReturn:
    """A model entrypoint's ``main``: open the run, build, fit; every failure is recorded in the run dir.

    Exit status: 0 done, 1 the run failed (reason in status.json), 2 a user error, 130 interrupted.
    """
    rank = int(os.environ.get("RANK", "0"))  # under torchrun; only rank 0 logs and records
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    die_with_parent()  # a killed runner (or torchrun) takes this process with it; exit if it is already gone
    stop = StopRequest().install()  # SIGINT/SIGTERM/SIGUSR1: checkpoint at the next step boundary, then exit
    args = entrypoint_args(description, argv)
    run_dir = args.run_dir.resolve()
    config = results.read_json(run_dir / results.CONFIG)
    spec = RunSpec.from_json(config) if config else None  # so even a failure in open() is recorded
    try:
        ctx = RunContext.open(run_dir, args.threads)
        ctx.stop = stop
        model, task = build(ctx)
        fit(ctx, model, task)
        if ctx.world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
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
