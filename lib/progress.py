"""Progress as a person reads it: a tqdm bar on a terminal; anywhere else (nohup, a batch scheduler's log file)
a timestamped line at a steady rate, ``2026-11-30 14:05:07 [3/6 done] run-id: step 120/180 (67%), ETA 1m05s``.

Also the one reading of a running run's pace from its ``status.json``: the trainer records there the wall time
and step of its first write (``started``, ``started_step``) and of its latest (``updated``, ``step``), so the
seconds per step since the process started give the time left (:func:`eta`), for the runner's lines and for
``make status`` alike.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

STAMP = "%Y-%m-%d %H:%M:%S"
# How often a log file gets progress lines: a line per running run each minute keeps a day-long matrix's log
# readable and still says within a minute that a run has stalled.
LINE_EVERY_SECONDS = 60.0


def is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def stamp(when: float) -> str:
    """``when`` (seconds since the epoch) as local ``YYYY-MM-DD HH:MM:SS``."""
    return time.strftime(STAMP, time.localtime(when))


def duration(seconds: float) -> str:
    """``45s``, ``4m10s``, ``1h02m``, ``2d03h``: two units at most, rounded to the second."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def eta(status: dict, now: float) -> float | None:
    """Seconds until a running run's last step, at its pace since its process started: ``(total - step)``
    steps at ``(updated - started) / (step - started_step)`` seconds each, less the time since ``updated``
    (never below 0). None before the process has measured a step (or for a status without those fields)."""
    try:
        started, first, updated = float(status["started"]), int(status["started_step"]), float(status["updated"])
        step, total = int(status["step"]), int(status["total_steps"])
    except (KeyError, TypeError, ValueError):
        return None
    if step <= first or updated <= started:
        return None
    per_step = (updated - started) / (step - first)
    return max(0.0, (total - step) * per_step - (now - updated))


def describe(status: dict, now: float) -> str:
    """``step 120/180 (67%), ETA 1m05s`` (``ETA unknown`` before a step is measured; ``starting`` before the
    trainer has written its step count)."""
    total = status.get("total_steps")
    if not total:
        return "starting"
    step = int(status.get("step", 0))
    left = eta(status, now)
    return f"step {step}/{total} ({100 * step // total}%), ETA {'unknown' if left is None else duration(left)}"


class Lines:
    """Timestamped progress lines for a stream that is not a terminal (there tqdm draws bars instead, and this
    writes nothing). :meth:`due` says when ``every`` seconds have passed since it last said so."""

    def __init__(
        self, stream: TextIO | None = None, every: float = LINE_EVERY_SECONDS, clock: Callable[[], float] = time.time
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = not is_terminal(self.stream)
        self.every, self.clock = every, clock
        self.last = clock()

    def due(self) -> bool:
        now = self.clock()
        if not self.enabled or now - self.last < self.every:
            return False
        self.last = now
        return True

    def write(self, text: str) -> None:
        if self.enabled:
            self.stream.write(f"{stamp(self.clock())} {text}\n")
            self.stream.flush()


class Meter:
    """A count with progress (documents tokenised, say): a tqdm bar on a terminal, else a timestamped line every
    ``every`` seconds and one at :meth:`close`. ``note`` adds a running figure (``1,234,567 tokens``)."""

    def __init__(
        self,
        desc: str,
        unit: str,
        stream: TextIO | None = None,
        every: float = LINE_EVERY_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.desc, self.unit, self.n, self.note = desc, unit, 0, ""
        self.lines = Lines(stream, every, clock)
        stream, off = self.lines.stream, self.lines.enabled
        # " documents": tqdm writes the unit right after the count
        self.bar = tqdm(desc=desc, unit=f" {unit}", file=stream, disable=off, dynamic_ncols=True)

    def update(self, n: int = 1, note: str = "") -> None:
        self.n += n
        self.note = note
        self.bar.update(n)
        if note:
            self.bar.set_postfix_str(note, refresh=False)
        if self.lines.due():
            self.lines.write(self._line())

    def close(self) -> None:
        self.bar.close()
        self.lines.write(self._line() + ", done")

    def _line(self) -> str:
        return f"{self.desc}: {self.n:,} {self.unit}" + (f", {self.note}" if self.note else "")
