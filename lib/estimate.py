"""How long a matrix takes: each run's budget (steps, and tokens for a language model) as its model package
counts it (:mod:`lib.budget`), and each model's pace measured on the runs of the matrix that are done.

A model's pace is Σ ``train_seconds`` / Σ ``steps`` over its done runs (their ``summary.json``; training steps
only, not evaluations or checkpoints, so the estimate is a lower bound) on the device most of them ran on
(``env.json``: the GPU's name, else the CPU's). A run's time is its steps at its model's pace; what is left
counts the steps a run has not yet made (its ``status.json``), and the wall time runs them ``JOBS`` at a time
in ledger order, as the scheduler does. ``make plan`` prints it for ``.config``'s matrix, ``make estimate``
for a matrix's ledger.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

from lib import results
from lib.budget import Budget
from lib.model_registry import MODEL_PACKAGES
from lib.progress import duration
from lib.pruning import PRUNERS
from lib.spec import RunSpec


def run_budget(spec: RunSpec) -> Budget:
    """The run's steps (and tokens) as its model package's ``budget(cfg, scale)`` counts them, ``scale`` being
    its pruning method's factor on the training length."""
    scale = PRUNERS[spec.axes["pruning"]].Settings.from_config(spec.cfg, spec.axes).budget_scale
    return MODEL_PACKAGES[spec.axes["model"]].budget(spec.cfg, scale)


@dataclass(frozen=True)
class Pace:
    """Seconds per training step of one model, measured on ``runs`` done runs on ``device``."""

    model: str
    device: str
    seconds_per_step: float
    runs: int
    elsewhere: int = 0  # done runs of the model on other devices, not counted

    def line(self) -> str:
        runs = f"{self.runs} done run{'' if self.runs == 1 else 's'}"
        other = f" ({self.elsewhere} on other devices not counted)" if self.elsewhere else ""
        return f"pace: {self.model} {self.seconds_per_step:.4g} s/step, from {runs} on {self.device}{other}"


def device_of(run: results.Run) -> str:
    env = results.read_json(run.path / results.ENV, {}) or {}
    return env.get("gpu") or env.get("cpu") or "an unknown device"


def paces(runs: Iterable[results.Run]) -> dict[str, Pace]:
    """Each model's pace over its done runs with a measured training time, on its most used device."""
    measured: dict[str, dict[str, list[tuple[float, int]]]] = {}
    for run in runs:
        summary = run.summary or {}
        seconds, steps = summary.get("train_seconds"), summary.get("steps")
        if run.state == "done" and seconds and steps:
            measured.setdefault(run.axes["model"], {}).setdefault(device_of(run), []).append((seconds, steps))
    found = {}
    for model, by_device in measured.items():
        device = max(sorted(by_device), key=lambda d: len(by_device[d]))
        pairs = by_device[device]
        per_step = sum(s for s, _ in pairs) / sum(n for _, n in pairs)
        found[model] = Pace(model, device, per_step, len(pairs), sum(map(len, by_device.values())) - len(pairs))
    return found


@dataclass(frozen=True)
class Item:
    """One run as the estimate sees it: its budget, whether it is done, and the steps it has made."""

    run_id: str
    model: str
    budget: Budget
    done: bool = False
    made: int = 0  # steps already made (its status.json), for a run that is not done


def items(specs: Iterable[RunSpec], known: Iterable[results.Run] = ()) -> list[Item]:
    """``specs`` with the state and progress of the runs of ``known`` (a matrix on disk) of the same id."""
    by_id = {run.run_id: run for run in known}
    found = []
    for spec in specs:
        run = by_id.get(spec.run_id)
        done = run is not None and run.state == "done"
        made = int(run.status.get("step", 0)) if run is not None and not done else 0
        found.append(Item(spec.run_id, spec.axes["model"], run_budget(spec), done, made))
    return found


def _wall(seconds: list[float], jobs: int) -> float:
    """Wall time of runs started in order ``jobs`` at a time, each as soon as a slot is free."""
    slots = [0.0] * max(1, min(jobs, len(seconds)))
    for s in seconds:
        heapq.heapreplace(slots, slots[0] + s)
    return max(slots)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class Estimate:
    """The budgets of a matrix's runs and, where their model's pace is measured, their times."""

    def __init__(self, runs: list[Item], measured: dict[str, Pace], jobs: int) -> None:
        self.runs, self.jobs = runs, jobs
        self.paces = {m: pace for m, pace in measured.items() if m in {i.model for i in runs}}

    def seconds(self, item: Item, steps: int | None = None) -> float | None:
        pace = self.paces.get(item.model)
        return None if pace is None else (item.budget.steps if steps is None else steps) * pace.seconds_per_step

    def columns(self) -> dict[str, str]:
        """Per run id: ``1,350 steps`` (then ``3,276,800 tokens`` when a run counts tokens, ``~20s`` when a pace
        is measured), each column right-aligned so the runs line up."""
        tokens = any(i.budget.tokens is not None for i in self.runs)
        rows = {}
        for i in self.runs:
            row = [f"{i.budget.steps:,} steps"]
            if tokens:
                row.append("" if i.budget.tokens is None else f"{i.budget.tokens:,} tokens")
            if self.paces:
                row.append(self._time(i))
            rows[i.run_id] = row
        widths = [max(len(row[k]) for row in rows.values()) for k in range(len(next(iter(rows.values()), [])))]
        return {run_id: "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for run_id, row in rows.items()}

    def _time(self, item: Item) -> str:
        seconds = self.seconds(item)
        return "?" if seconds is None else f"~{duration(seconds)}"

    def lines(self, where: str) -> list[str]:
        """The totals: steps (and tokens) in all, each measured pace, the time in all and what is left."""
        tokens = [i.budget.tokens for i in self.runs if i.budget.tokens is not None]
        total = f"steps: {sum(i.budget.steps for i in self.runs):,} in all"
        lines = [total + (f", {sum(tokens):,} tokens" if tokens else "")]
        if not self.paces:
            return [*lines, f"time: estimated once a run of {where} is done"]
        lines += [self.paces[m].line() for m in sorted(self.paces)]
        unmeasured = sorted({i.model for i in self.runs} - set(self.paces))
        lines += [f"time: {m} not estimated: none of its runs is done yet" for m in unmeasured]
        timed = [i for i in self.runs if i.model in self.paces]
        spent = sum(self.seconds(i) for i in timed)
        runs = _plural(len(timed), "run") if len(timed) == len(self.runs) else f"{len(timed)} of {len(self.runs)} runs"
        left = [self.seconds(i, max(0, i.budget.steps - i.made)) for i in timed if not i.done]
        if not left:
            return [*lines, f"time: ~{duration(spent)} of training for {runs}; all done"]
        wall = f", ~{duration(_wall(left, self.jobs))} with JOBS={self.jobs}" if self.jobs > 1 and len(left) > 1 else ""
        return [
            *lines,
            f"time: ~{duration(spent)} of training for {runs}; ~{duration(sum(left))} left for the "
            f"{len(left)} not done{wall}",
        ]
