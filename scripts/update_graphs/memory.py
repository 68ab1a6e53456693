"""Memory as the report reads it from run directories, in MiB.

``summary.json``'s ``"memory"`` holds the peaks a run measured (``peak_device_bytes``: the device memory the
driver reports for the process, CUDA context included; ``peak_allocated_bytes`` / ``peak_reserved_bytes``: the
caching allocator's; ``peak_rss_bytes``: host) and ``"counted"``, the bytes of the actual tensors (parameters,
gradients, optimizer state, masks, pruner state, and ``state_x_weights`` = optimizer state + masks + pruner
state over the weights). The memory time line is ``metrics.jsonl``'s rows of split ``"memory"`` (step,
time_s, rss_bytes, device_bytes, allocated_bytes, reserved_bytes). Run directories from before memory was
measured have none of these, only the summary's ``peak_memory_bytes`` (the allocator's peak on a GPU, the peak
RSS on a CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lib.results import Run
from scripts.update_graphs.numbers import MIB

SPLIT = "memory"  # the time line's rows in metrics.jsonl


def recorded(run: Run) -> dict[str, Any]:
    """The run's ``summary["memory"]`` ({} when it has none)."""
    memory = (run.summary or {}).get("memory")
    return memory if isinstance(memory, dict) else {}


@dataclass(frozen=True)
class Measure:
    """One way a run's memory is recorded: where it sits in the summary and what an axis calls it."""

    key: str
    label: str  # the quantity, without its unit
    read: Callable[[Run], float | None]  # the raw value (bytes, or a ratio)
    unit: str = "MiB"

    def of(self, run: Run) -> float | None:
        """The value in its unit (bytes shown in MiB), or None when the run does not record it."""
        value = self.read(run)
        if value is None:
            return None
        return float(value) / MIB if self.unit == "MiB" else float(value)

    def axis_label(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def number(self, value: float) -> str:
        return f"{value:.2f}" if self.unit == "%" else f"{value:#.4g}"


def _peak(key: str) -> Callable[[Run], Any]:
    return lambda run: recorded(run).get(key)


def _counted(key: str) -> Callable[[Run], Any]:
    return lambda run: (recorded(run).get("counted") or {}).get(key)


# The peak a figure shows: the first of these that every run of the figure records.
PEAKS = (
    Measure("peak_device_bytes", "peak device memory", _peak("peak_device_bytes")),
    Measure("peak_allocated_bytes", "peak memory allocated by PyTorch", _peak("peak_allocated_bytes")),
    Measure(
        "peak_memory_bytes",
        "peak memory: allocator on GPU, RSS on CPU",
        lambda run: (run.summary or {}).get("peak_memory_bytes"),
    ),
)
PEAK_RSS = Measure("peak_rss_bytes", "peak host RSS", _peak("peak_rss_bytes"))
OPTIMIZER_STATE = Measure("optimizer_state_bytes", "optimizer state", _counted("optimizer_state_bytes"))
MASKS = Measure("mask_bytes", "pruning masks", _counted("mask_bytes"))
STATE_X_WEIGHTS = Measure("state_x_weights", "training state", _counted("state_x_weights"), unit="× weight bytes")


def peak_measure(runs: Sequence[Run]) -> Measure | None:
    """The first of :data:`PEAKS` that every run records (one measure per figure, so its bars compare); None
    when no measure is recorded by all of them. Runs without a summary are not asked."""
    runs = [r for r in runs if r.summary]
    return next((m for m in PEAKS if runs and all(m.of(r) is not None for r in runs)), None)


def timeline(run: Run) -> list[dict]:
    """The run's memory rows, in the order it sampled them."""
    return [row for row in run.metrics if row.get("split") == SPLIT]


TIMELINES = (("device_bytes", "device memory of the process"), ("rss_bytes", "host RSS of the process"))


def timeline_measure(runs: Sequence[Run]) -> tuple[str, str] | None:
    """(row key, label) of what the time line of ``runs`` shows: the device memory when every row has it, else
    the RSS; None when no run has memory rows."""
    rows = [row for run in runs for row in timeline(run)]
    if not rows:
        return None
    return next((t for t in TIMELINES if all(row.get(t[0]) is not None for row in rows)), None)
