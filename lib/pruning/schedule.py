"""Sparsity schedules, shaped like learning-rate schedulers (``step()``, ``last_step``, ``state_dict()``).

Between a start step t0 and an end step t1, with progress p = (t - t0) / (t1 - t0), the sparsity is
``s_f * shape(p)``; 0 before t0 and s_f after t1. Shapes (``PRUNING_SCHEDULE``):

    cubic     1 - (1 - p)^3   Zhu & Gupta 2017, "To prune, or not to prune", eq. 1 (initial sparsity 0):
                              prunes fast while the network has redundancy, slowly near the target
    late      p^3             the late ramp: little pruning early, most of it near t1

Gradual masks are recomputed every ``interval`` steps from t0, and at t1 so the run always ends exactly at
the target; in between they are only re-applied. Two more kinds: ``oneshot`` prunes to s_f once, at t0;
``constant`` is at s_f from the start (masks computed before the first step, never again).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lib.registry import Registry

SPARSITY_SHAPES: Registry[Callable[[float], float]] = Registry("sparsity schedule", "PRUNING_SCHEDULE")
SPARSITY_SHAPES.register("cubic")(lambda p: 1.0 - (1.0 - p) ** 3)
SPARSITY_SHAPES.register("late")(lambda p: p**3)
SPARSITY_SHAPES.register("oneshot")(lambda p: 1.0)
SPARSITY_SHAPES.register("constant")(lambda p: 1.0)


class SparsitySchedule:
    """Sparsity over optimizer steps; ``shape`` is a :data:`SPARSITY_SHAPES` name (cubic by default)."""

    def __init__(self, final: float, start: int, end: int, interval: int, shape: str = "cubic") -> None:
        if not 0 <= start <= end:
            raise ValueError(f"schedule needs 0 <= start <= end, got start={start} end={end}")
        self.final = final
        self.start = start
        self.end = end
        self.interval = interval
        self.kind = shape
        self.shape = SPARSITY_SHAPES[shape]
        self.last_step = 0

    @property
    def at_start(self) -> bool:
        """Masks are computed once, before the first step (``constant``)."""
        return self.kind == "constant"

    def sparsity(self, step: int) -> float:
        if self.kind == "constant":
            return self.final
        if step < self.start:
            return 0.0
        if step >= self.end:
            return self.final
        progress = (step - self.start) / (self.end - self.start)
        return self.final * self.shape(progress)

    def is_update_step(self, step: int) -> bool:
        """Whether masks are recomputed after optimizer step ``step`` (1-based)."""
        if self.kind == "constant":
            return False
        if self.kind == "oneshot":
            return step == self.start
        if step == self.end:
            return True
        return self.start <= step < self.end and (step - self.start) % self.interval == 0

    def step(self) -> None:
        self.last_step += 1

    def state_dict(self) -> dict:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = state["last_step"]


@dataclass(frozen=True)
class ScheduleSettings:
    """When a gradual method prunes: ``PRUNING_SCHEDULE``, ``PRUNING_START_PERCENT`` / ``_END_PERCENT`` of the run's
    optimizer steps (or the start as a step, ``PRUNING_START_STEP``), and ``PRUNING_INTERVAL`` steps between mask
    updates."""

    shape: str = "cubic"
    start_percent: int = 0
    start_step: int = 0  # > 0: the start as an optimizer step, replacing start_percent
    end_percent: int = 100
    interval: int = 1

    @classmethod
    def from_config(cls, cfg) -> ScheduleSettings:
        return cls(
            shape=cfg["PRUNING_SCHEDULE"],
            start_percent=cfg["PRUNING_START_PERCENT"],
            start_step=cfg["PRUNING_START_STEP"],
            end_percent=cfg["PRUNING_END_PERCENT"],
            interval=cfg["PRUNING_INTERVAL"],
        )

    def build(self, final: float, total_steps: int) -> SparsitySchedule:
        """The schedule to ``final`` over a run of ``total_steps``. Steps are counted from 1 (the first update
        happens after the first optimizer step), so a schedule that starts "at 0%" starts at step 1. A start
        given as a step stays at that step whatever the run's length."""
        start = self.start_step or max(1, round(total_steps * self.start_percent / 100))
        end = round(total_steps * self.end_percent / 100)
        return SparsitySchedule(final, start, max(start, end), self.interval, self.shape)
