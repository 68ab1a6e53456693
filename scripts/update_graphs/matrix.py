"""A matrix as the report reads it: its runs (from the ledger and the run directories), the eval metric of
each run, how each metric is shown, and the matrix's name."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.results import Run, load_matrix
from scripts.update_graphs.numbers import MetricFormat, metric_formats


def infer_metric(run: Run) -> str | None:
    """The eval metric of a run without a summary: the one eval key that is not bookkeeping."""
    keys = {k for r in run.metrics if r.get("split") == "eval" for k in r} - {"split", "step", "epoch"}
    others = sorted(keys - {"loss"})
    if len(others) == 1:
        return others[0]
    return "loss" if keys == {"loss"} else None


def run_metrics(runs: Sequence[Run]) -> dict[str, str | None]:
    """run id -> eval metric: the summary's, else a summarised run's of the same model, else inferred."""
    by_model: dict[Any, str] = {}
    for run in runs:
        if run.metric:
            by_model.setdefault(run.axes.get("model"), run.metric)
    return {run.run_id: run.metric or by_model.get(run.axes.get("model")) or infer_metric(run) for run in runs}


def matrix_name(runs: Sequence[Run], matrix_dir: Path) -> str:
    names = sorted({str(r.config["matrix"]) for r in runs if r.config.get("matrix")})
    return ", ".join(names) if names else matrix_dir.resolve().name


def state_counts(runs: Sequence[Run]) -> str:
    """Runs per state, e.g. "12 done · 1 failed · 0 running · 1 pending", then any other (interrupted)."""
    states = Counter(r.state for r in runs)
    order = ["done", "failed", "running", "pending"]
    counts = [f"{states[s]} {s}" for s in order] + [f"{n} {s}" for s, n in sorted(states.items()) if s not in order]
    return " · ".join(counts)


@dataclass
class Matrix:
    """Every run of one matrix directory, with what the report needs to know about them together."""

    path: Path
    runs: list[Run]
    metrics: dict[str, str | None] = field(init=False)  # run id -> its eval metric (None: not known yet)
    formats: dict[str, MetricFormat] = field(init=False)  # eval metric -> how it is shown

    def __post_init__(self) -> None:
        self.metrics = run_metrics(self.runs)
        self.formats = metric_formats(self.runs, self.metrics)

    @property
    def name(self) -> str:
        return matrix_name(self.runs, self.path)

    @property
    def several_models(self) -> bool:
        # From every run, not just the done ones, so a figure's name does not change as runs finish.
        return len({str(r.axes.get("model")) for r in self.runs}) > 1

    def metric(self, run: Run) -> str | None:
        return self.metrics[run.run_id]

    def format(self, run: Run) -> MetricFormat | None:
        metric = self.metrics[run.run_id]
        return self.formats.get(metric) if metric else None


def load(matrix_dir: Path) -> Matrix:
    """The matrix in ``matrix_dir``: the runs its ledger lists and any other run directory in it."""
    return Matrix(matrix_dir, load_matrix(matrix_dir))
