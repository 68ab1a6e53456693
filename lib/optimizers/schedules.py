"""Learning-rate schedules: ``LR_SCHEDULE_<NAME>`` -> ``LR_SCHEDULES["<name>"]``.

Each entry maps ``(step, total_steps, cfg)`` to a multiplier of the peak learning rate. :class:`LRSchedule`
applies it to every parameter group after each optimizer step, like a ``torch.optim.lr_scheduler``
(``step()``, ``last_step``, ``state_dict()``): each group's lr is its own peak (``initial_lr``, recorded once)
times the factor, so optimizers with several peaks (Muon + AdamW) follow one curve. It is saved in checkpoints
so a resumed run continues the same curve.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from lib.registry import Registry

LR_SCHEDULES: Registry[Callable[[int, int, object], float]] = Registry("LR schedule", "LR_SCHEDULE")


def _warmup(step: int, cfg) -> float | None:
    warmup = cfg["LR_WARMUP_STEPS"]
    if warmup and step < warmup:
        return (step + 1) / warmup
    return None


@LR_SCHEDULES.register("constant")
def constant(step: int, total: int, cfg) -> float:
    w = _warmup(step, cfg)
    return 1.0 if w is None else w


@LR_SCHEDULES.register("cosine")
def cosine(step: int, total: int, cfg) -> float:
    w = _warmup(step, cfg)
    if w is not None:
        return w
    warmup = cfg["LR_WARMUP_STEPS"]
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = cfg["LR_MIN_RATIO"] or 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@LR_SCHEDULES.register("wsd")
def warmup_stable_decay(step: int, total: int, cfg) -> float:
    w = _warmup(step, cfg)
    if w is not None:
        return w
    decay = max(1, round(total * cfg["LR_DECAY_PERCENT"] / 100))
    start = total - decay
    if step < start:
        return 1.0
    floor = cfg["LR_MIN_RATIO"] or 0.0
    return floor + (1.0 - floor) * max(0.0, (total - step) / decay)


@LR_SCHEDULES.register("warmdown")
def warmdown(step: int, total: int, cfg) -> float:
    """The modded-nanogpt speedrun's ``get_lr`` (records/101724_DistributedMuon/train_gpt2.py): the peak until
    ``total - LR_WARMDOWN_ITERS``, then ``(total - step) / LR_WARMDOWN_ITERS``, a straight line that would
    reach 0 one step after the last. Its warm-up is ``LR_WARMUP_STEPS`` (the speedrun uses none)."""
    w = _warmup(step, cfg)
    if w is not None:
        return w
    warmdown = cfg["LR_WARMDOWN_ITERS"]
    if step < total - warmdown:
        return 1.0
    return max(0.0, (total - step) / warmdown)


@LR_SCHEDULES.register("step")
def step_decay(step: int, total: int, cfg) -> float:
    w = _warmup(step, cfg)
    if w is not None:
        return w
    interval = max(1, round(total * cfg["LR_STEP_PERCENT"] / 100))
    return cfg["LR_STEP_GAMMA"] ** (step // interval)


@LR_SCHEDULES.register("onecycle")
def one_cycle(step: int, total: int, cfg) -> float:
    rise = max(1, round(total * cfg["LR_ONECYCLE_PERCENT"] / 100))
    if step < rise:
        start = 1.0 / cfg["LR_ONECYCLE_DIV"]
        return start + (1.0 - start) * 0.5 * (1.0 - math.cos(math.pi * step / rise))
    progress = min(1.0, (step - rise) / max(1, total - rise))
    floor = cfg["LR_MIN_RATIO"] or 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LRSchedule:
    """Sets ``lr = initial_lr * factor(step)`` on every group; ``step()`` advances after each optimizer step."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, cfg, name: str | None = None) -> None:
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.cfg = cfg
        self.name = name or cfg["LR_SCHEDULE"]
        self.factor = LR_SCHEDULES[self.name]
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.last_step = 0
        self._apply()

    def _apply(self) -> None:
        factor = self.factor(self.last_step, self.total_steps, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def get_last_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"last_step": self.last_step, "name": self.name}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = state["last_step"]
        self._apply()
