"""The shared training loop in parts: the loop's state, its set-up and resume, a period of steps, the period's
end (evaluation, best checkpoint, checkpoint), stopping, and the summary.

Training is a sequence of periods (epochs for images, EVAL_INTERVAL steps for tokens), each ending with an
evaluation and a checkpoint. :class:`TrainState` counts where the run is ("epoch": periods done, "batch": steps
done in the current one) and goes into every checkpoint as plain values. Each step is
:func:`lib.step.train_step`, the function tests and benchmarks call too. DDP differences live in
:class:`lib.ranks.Ranks`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import torch
from torch import nn

import kernels
from lib import checkpoint, results, tracking
from lib.memory import MemorySampler, counted_bytes
from lib.monitor import environment, peak_flops, peak_memory_bytes, reset_peak_memory
from lib.optimizers import OPTIMIZERS, set_peak_lr
from lib.optimizers.schedules import LRSchedule
from lib.pruning import PRUNERS
from lib.step import train_step

if TYPE_CHECKING:
    from lib.spec import RunSpec
    from lib.training import RunContext, Speed

logger = logging.getLogger(__name__)

STATUS_EVERY_SECONDS = 1.0


class NonFiniteLoss(Exception):
    """The training loss became NaN or infinite: the run fails with this reason."""


class Interrupted(Exception):
    """A stop signal arrived; the run saved a checkpoint at a step boundary and stops, resumable."""


@dataclass
class TrainState:
    """Where a run is and what it has gathered; saved in every checkpoint as ``dataclasses.asdict`` of it."""

    step: int = 0
    epoch: int = 0  # periods done
    batch: int = 0  # steps done in the current period
    best: dict | None = None  # the best evaluation so far, with its step
    train_seconds: float = 0.0  # time in training steps with their log rows (not evaluation or checkpoints)
    samples: int = 0  # units trained on (images, tokens)
    # After each process's warm-up (its first log row: compilation, allocator growth, kernel selection), the
    # training time and units again: the steady throughput
    steady_seconds: float = 0.0
    steady_samples: int = 0
    metric_rows: int = 0  # rows of metrics.jsonl written so far
    peak_memory_bytes: int = 0
    memory: dict | None = None  # the memory sampler's seconds and peaks so far (MemorySampler.state)
    last_eval: dict | None = None
    loss_sum: float = 0.0  # the training loss summed since the last log row (its mean over ranks)
    loss_count: int = 0

    @classmethod
    def from_dict(cls, saved: dict) -> TrainState:
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls) if f.name in saved})


class StatusWriter:
    """``status.json``: the live state the runner's progress bars read; written at most once a second (by
    rank 0 only, under DDP). The wall time and step of this process's first write and of the latest one give a
    run's pace (:func:`lib.progress.eta`)."""

    def __init__(self, path, total_steps: int, enabled: bool = True) -> None:
        self.path = path
        self.total_steps = total_steps
        self.enabled = enabled
        self.last = 0.0
        self.started: dict[str, float] = {}

    def write(self, state: str, step: int, force: bool = False, **extra: Any) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if force or now - self.last >= STATUS_EVERY_SECONDS:
            self.last = now
            self.started = self.started or {"started": time.time(), "started_step": step}
            status = {"state": state, "step": step, "total_steps": self.total_steps, "updated": time.time()}
            results.atomic_write_json(self.path, {**status, **self.started, **extra})


class Trainer:
    """One run's training: the parts built from its config, its state, and the loop as small methods."""

    def __init__(self, ctx: RunContext, model: nn.Module, task, speed: Speed) -> None:
        cfg, axes, device = ctx.cfg, ctx.spec.axes, ctx.device
        self.ctx, self.cfg, self.model, self.task, self.speed, self.device = ctx, cfg, model, task, speed, device
        self.ranks = ctx.ranks
        pruner_cls = PRUNERS[axes["pruning"]]
        pruning = pruner_cls.Settings.from_config(cfg, axes)
        self.periods = task.periods(cfg, pruning.budget_scale)
        self.total_steps = sum(self.periods)
        # Before the model moves: on CUDA the sampler measures the context now. Only rank 0 keeps a time line.
        self.memory = MemorySampler(device, cfg["MEMORY_SAMPLE_MS"] / 1000 if self.ranks.main else 0)
        model.to(device)
        self.forward = speed.prepare(model, task, device)  # evaluation calls it; training its DDP wrapping
        self.pruner = pruner_cls(model, pruning, self.total_steps)
        self.pruner.prepare()
        self.kernels = kernels.prepare(model, cfg, "train", device)  # after the masks exist: kernels read them
        self.train_forward = self.ranks.wrap(self.forward)
        setup = OPTIMIZERS[axes["optimizer"]](model, cfg)
        self.optimizer, self.clip_grad_norm = setup.optimizer, setup.clip_grad_norm
        if axes.get("lr"):
            set_peak_lr(self.optimizer, axes["lr"])
        self.pruner.attach(self.optimizer, setup.elementwise)
        self.schedule = LRSchedule(self.optimizer, self.total_steps, cfg, setup.schedule)
        self.state = TrainState()
        self.status = StatusWriter(ctx.run_dir / results.STATUS, self.total_steps, enabled=self.ranks.main)
        self.tracker = None
        self.loss_sum = self.loss_count = None  # the running loss since the last log row, set by start()
        self.warm, self.counted_samples = False, 0  # past this process's warm-up; units already timed
        # Text samples during training (GPT-2's GPT2_SAMPLE_INTERVAL): a task may carry a sampler with ``every``
        sampler = getattr(task, "sampler", None)
        self.sampler = sampler if sampler is not None and sampler.every > 0 else None

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.speed.autocast(self.device)

    def fit(self) -> dict:
        """Train to the end (from the checkpoint, if there is one); the summary (``{}`` on ranks other than 0)."""
        try:
            self.start()
            self.model.train()
            for period in range(self.state.epoch, len(self.periods)):
                self.train_period(period)
                self.end_period(period)
            return self.summary() if self.ranks.main else {}
        finally:  # also when the run fails or stops: the sampler's thread ends with it
            self.memory.stop()

    def start(self) -> None:
        """Resume from the checkpoint, or start a fresh run directory; then the tracker and status."""
        ctx, state = self.ctx, self.state
        restored = checkpoint.resume_training(
            ctx.run_dir,
            self.device,
            model=self.model,
            optimizer=self.optimizer,
            schedule=self.schedule,
            pruner=self.pruner,
            main=self.ranks.main,
        )
        if restored is not None:
            self.state = state = TrainState.from_dict(restored)
            state.loss_sum = self.ranks.own_part(state.loss_sum)
            logger.info(
                "resumed %s at step %d/%d (epoch %d, batch %d)",
                *(ctx.spec.run_id, state.step, self.total_steps, state.epoch, state.batch),
            )
        elif self.ranks.main:
            results.write_jsonl(ctx.run_dir / results.METRICS, [])
            env = {**environment(self.device), "world_size": ctx.world, "started": time.time()}
            results.atomic_write_json(ctx.run_dir / results.ENV, env)
            logger.info(
                "starting %s: %d steps (%d evaluation periods) on %s, %d threads",
                *(ctx.spec.run_id, self.total_steps, len(self.periods), self.device, ctx.threads),
            )
        # Never raises: a tracker that fails is a warning and is off (metrics.jsonl is the record).
        main, resumed = self.ranks.main, restored is not None
        self.tracker = tracking.for_run(ctx.spec, ctx.run_dir, resumed) if main else tracking.Trackers()
        self.status.write("running", state.step, force=True)
        reset_peak_memory(self.device)
        self.memory.start(state.memory, state.step)
        self.loss_sum = torch.tensor(state.loss_sum, dtype=torch.float64, device=self.device)
        self.loss_count = state.loss_count
        if restored is None and self.ranks.main and self.cfg.get("EVAL_AT_START"):
            # A fresh run only: a resumed one has this row already (and its best checkpoint's baseline).
            self.evaluate(-1)

    def train_period(self, period: int) -> None:
        """The steps of one period from ``state.batch`` on, with log rows, checkpoints and stopping."""
        state, task, steps = self.state, self.task, self.periods[period]
        log_every, checkpoint_every = self.cfg["LOG_INTERVAL"], self.cfg["CHECKPOINT_INTERVAL"]
        tick = time.perf_counter()
        self.counted_samples = state.samples
        for batch in task.batches(self.ctx.spec.axes["seed"], period, state.batch, steps):
            loss = train_step(
                self.model,
                self.ranks.share(task.micro_batches(batch)),
                task.loss,
                self.optimizer,
                forward=self.train_forward,
                pruner=self.pruner,
                clip_grad_norm=self.clip_grad_norm,
                schedule=self.schedule,
                autocast=self.autocast,
            )
            state.step += 1
            self.memory.step = state.step
            state.batch += 1
            state.samples += task.units(batch)
            self.loss_sum += loss.double()
            self.loss_count += 1
            if self.sampler is not None and state.step % self.sampler.every == 0 and self.ranks.main:
                self.account(tick)  # sampling, like a checkpoint, is not training time
                sample = self.sampler(self.model, state.step)
                results.append_jsonl(self.ctx.run_dir / results.SAMPLES, [sample], durable=False)
                tick = time.perf_counter()
            logged = state.step % log_every == 0 or state.batch == steps
            if logged:  # the row's cost is the steps' own: training time stops only for checkpoints
                self.check_finite()
                self.log_train()
                if not self.warm:  # this process's first row ends its warm-up
                    tick, self.warm = self.account(tick), True
            mid_period = state.batch < steps  # a period's last step ends with its own checkpoint
            # Under DDP the ranks agree on a stop through a collective that waits for the device: only at a log
            # row, where the loop waits anyway, never on every step. One process checks its flag every step.
            stopping = mid_period and (logged or self.ranks.world == 1) and self.stop_requested()
            if mid_period and (state.step % checkpoint_every == 0 or stopping):
                self.account(tick)
                self.save()
                tick = time.perf_counter()
            if stopping:
                self.stop("mid-period")
        self.account(tick)

    def account(self, tick: float) -> float:
        """Add the time since ``tick`` to the training time (and, once warm, with the units trained since the
        last call, to the steady time); the time now."""
        state, now = self.state, time.perf_counter()
        state.train_seconds += now - tick
        if self.warm:
            state.steady_seconds += now - tick
            state.steady_samples += state.samples - self.counted_samples
        self.counted_samples = state.samples
        return now

    def check_finite(self) -> None:
        # A sum is finite exactly when every loss in it is (float64 cannot overflow adding float32 losses),
        # so one test per log row covers every step since the last one.
        if self.ranks.any(~torch.isfinite(self.loss_sum)):
            raise NonFiniteLoss(f"non-finite training loss at or before step {self.state.step}")

    def log_train(self) -> None:
        """A training row: the mean loss since the last row, the learning rate, the achieved sparsity."""
        step = self.state.step
        loss = self.ranks.mean(self.loss_sum).item() / self.loss_count
        row = {"split": "train", "step": step, **self.task.progress(step), "loss": loss}
        train = {**row, "lr": self.schedule.get_last_lr(), "sparsity": self.pruner.sparsity()}
        self.log_rows([*self.memory.drain(), train])  # the memory rows sampled since the last row come first
        self.loss_sum.zero_()
        self.loss_count = 0
        self.status.write("running", step)

    def log_rows(self, rows: list[dict]) -> None:
        if not self.ranks.main:
            return
        # fsync'd with the next checkpoint or the summary (save(), summary()), not one fsync per row
        results.append_jsonl(self.ctx.run_dir / results.METRICS, rows, durable=False)
        self.state.metric_rows += len(rows)
        for row in rows:
            self.tracker.log(row, row["step"])

    def end_period(self, period: int) -> None:
        """Rank 0 evaluates (and keeps the best model); every rank checkpoints and may stop here."""
        state = self.state
        if self.ranks.main:
            self.evaluate(period)
        state.epoch, state.batch = period + 1, 0
        self.save()  # under DDP the other ranks meet rank 0 in its collective
        self.status.write("running", state.step, force=True)
        if period + 1 < len(self.periods) and self.stop_requested():
            self.stop("at the period's end")

    def evaluate(self, period: int) -> None:
        """Validation (``period`` -1: at step 0, before training), its metrics row and the best checkpoint."""
        state = self.state
        with self.speed.autocast(self.device):
            evaluation = self.task.evaluate(self.forward)
        state.last_eval = evaluation
        self.log_rows([{"split": "eval", "step": state.step, **self.task.progress(state.step), **evaluation}])
        if state.best is None or self.improved(evaluation, state.best):
            state.best = {**evaluation, "step": state.step}
            checkpoint.save(
                {"model": self.model.state_dict(), "step": state.step, "eval": evaluation},
                self.ctx.run_dir / results.BEST_CHECKPOINT,
            )
        logger.info(
            "%s step %d/%d: %s",
            "before training:" if period < 0 else f"period {period + 1}/{len(self.periods)}",
            *(state.step, self.total_steps),
            ", ".join(f"{k} {v:.4f}" for k, v in evaluation.items()),
        )

    def improved(self, evaluation: dict, best: dict) -> bool:
        new, old = evaluation[self.task.metric], best[self.task.metric]
        return new > old if self.task.metric_mode == "max" else new < old

    def save(self) -> None:
        """The checkpoint (rank 0 writes it; every rank takes part in the loss's mean)."""
        state = self.state
        # The running sum of the loss since the last log row, so a resumed run logs the same numbers.
        state.loss_sum, state.loss_count = self.ranks.mean(self.loss_sum).item(), self.loss_count
        if not self.ranks.main:
            return
        state.peak_memory_bytes = max(state.peak_memory_bytes, peak_memory_bytes(self.device))
        state.memory = self.memory.state()
        results.sync_file(self.ctx.run_dir / results.METRICS)  # the rows the checkpoint counts are on disk first
        checkpoint.save_training(
            self.ctx.run_dir / results.CHECKPOINT,
            model=self.model,
            optimizer=self.optimizer,
            schedule=self.schedule,
            pruner=self.pruner,
            state=dataclasses.asdict(state),
            threads=self.ctx.threads,
            run_id=self.ctx.spec.run_id,
        )

    def stop_requested(self) -> bool:
        """Whether to stop here: a stop signal reached this process (under DDP: any rank, so that every rank
        stops at the same step; a collective, called only at log rows and period ends)."""
        stop = self.ctx.stop
        return self.ranks.any(stop is not None and stop.requested)

    def stop(self, where: str) -> NoReturn:
        """End the run after its checkpoint: no rank leaves (and has torchrun stop the others) before rank 0
        has saved."""
        stop = self.ctx.stop
        reason = stop.name if stop and stop.requested else "a stop signal on another rank"
        logger.info(
            "%s: checkpoint saved %s at step %d; `make continue` resumes the run", reason, where, self.state.step
        )
        self.ranks.barrier()
        raise Interrupted(reason)

    def summary(self) -> dict:
        """``summary.json``, written; the status is set to done."""
        state, task, pruner = self.state, self.task, self.pruner
        self.memory.stop()
        self.log_rows(self.memory.drain())  # the time line to the end (evaluation and checkpoints included)
        summary = {
            **identity(self.ctx.spec),
            "world_size": self.ctx.world,
            "status": "done",
            "reason": None,
            "metric": task.metric,
            "metric_mode": task.metric_mode,
            "final": state.last_eval,
            "best": state.best,
            "sparsity": self.pruner.sparsity(),
            "layer_sparsity": pruner.layer_sparsity(),
            **parameter_counts(self.model, pruner),
            "mask_bytes": pruner.mask_bytes(),
            "pruning_seconds": pruner.seconds,
            "kernels": self.kernels,
            "train_seconds": state.train_seconds,
            "peak_memory_bytes": max(state.peak_memory_bytes, peak_memory_bytes(self.device)),
            "memory": self.memory.summary(counted_bytes(self.model, self.optimizer, pruner)),
            "throughput": state.samples / state.train_seconds if state.train_seconds else None,
            "throughput_steady": state.steady_samples / state.steady_seconds if state.steady_seconds else None,
            "throughput_unit": f"{task.unit}/s",
            "mfu": mfu(self.model, task, state, self.device, self.speed),
            "flops_per_token": flops_per_token(self.model),
            "steps": state.step,
            "epochs": len(self.periods),
        }
        results.sync_file(self.ctx.run_dir / results.METRICS)
        results.atomic_write_json(self.ctx.run_dir / results.SUMMARY, summary)
        self.status.write("done", state.step, force=True)
        self.tracker.finish(summary)  # after summary.json: a tracker slow to finish never holds the record back
        return summary


def flops_per_token(model: nn.Module) -> int | None:
    """Training FLOPs per token of models that count them (GPT-2), for the report; None for the others."""
    count = getattr(model, "flops_per_token", None)
    return count() if count is not None else None


def mfu(model: nn.Module, task, state: TrainState, device: torch.device, speed: Speed) -> float | None:
    """Model FLOPs utilisation: training FLOPs per second over the device's dense peak, for models that know
    their FLOPs per token (GPT-2: 6N + 12·L·C·T) on a GPU listed in :data:`lib.monitor.PEAK_FLOPS`."""
    peak = peak_flops(device, speed.precision)
    if task.unit != "tokens" or not peak or not state.train_seconds:
        return None
    flops = flops_per_token(model)
    if flops is None:
        return None
    if state.steady_seconds:  # after warm-up, as MFU is quoted
        return state.steady_samples / state.steady_seconds * flops / peak
    return state.samples / state.train_seconds * flops / peak


def parameter_counts(model: nn.Module, pruner) -> dict[str, int]:
    """``parameters``: the model's parameters, each tied tensor once; ``nonzero_parameters``: those less the
    entries the pruner holds at zero (``layer_sparsity`` × each pruned weight's size)."""
    total = sum(p.numel() for p in model.parameters())
    numel = {name: m.weight.numel() for name, m in pruner.modules}
    pruned = sum(round(fraction * numel[name]) for name, fraction in pruner.layer_sparsity().items())
    return {"parameters": total, "nonzero_parameters": total - pruned}


def identity(spec: RunSpec) -> dict:
    # One top-level key per matrix axis (model, optimizer, pruning, target_sparsity, seed, and any axis a
    # later matrix adds), plus the axes again as one dict for code that iterates over them.
    return {"run_id": spec.run_id, **spec.axes, "axes": dict(spec.axes)}
