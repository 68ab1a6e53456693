"""``make status``: where each run of a matrix stands, read from its ledger and run directories; nothing is
started, locked or written.

::

    matrix results/quickstart, run by pid 4242
      done         lenet5-adamw-none-seed0            accuracy=0.9750
      running      lenet5-adamw-magnitude-s0.5-seed0  step 120/1350 (8%), ETA 4m10s
      failed       lenet5-sgd-none-seed0              non-finite training loss at or before step 7
      pending      lenet5-sgd-magnitude-s0.5-seed0
    4 runs: 1 done, 1 running, 1 failed, 1 pending

The ledger's state is the runner's record (a training process that died is recorded failed, with its reason,
by the runner that saw it end). A run the ledger calls running while no process holds the matrix's lock was
left by a runner that is gone (killed, or its machine rebooted; its training processes died with it): it is
shown interrupted, as ``make continue`` resumes it, whatever its ``status.json`` last said. A running run whose
``status.json`` has not changed for :data:`STALE_SECONDS` says so.
"""

from __future__ import annotations

from pathlib import Path

from lib import results
from lib.ledger import MatrixLock
from lib.progress import describe, duration

STATES = ("done", "running", "failed", "interrupted", "pending")
# A training process writes its status.json at every log row and evaluation: this long without a write is worth
# a look (a hung collective, a stalled file system), though a slow evaluation can take it too.
STALE_SECONDS = 600.0


def _detail(run: results.Run, state: str, reason: str | None, now: float) -> str:
    if state == "done":
        final = run.final()
        return "" if final is None else f"{run.metric}={final:.4f}"
    if state == "running":
        updated = run.status.get("updated")
        quiet = now - float(updated) if updated is not None else 0.0
        stale = f"; no update for {duration(quiet)}" if quiet >= STALE_SECONDS else ""
        return describe(run.status, now) + stale
    if state in ("failed", "interrupted"):
        return " ".join(str(reason or run.reason).split())
    return ""


def _state(run: results.Run, reason: str | None, runner: str | None) -> tuple[str, str | None]:
    """The state to show and its reason: a running run without a runner is interrupted."""
    state = run.state if run.state in STATES else "pending"
    if state == "running" and runner is None:
        step, total = run.status.get("step"), run.status.get("total_steps")
        where = f" at step {step}/{total}" if step is not None and total else ""
        return "interrupted", f"its runner is gone (stopped{where}); `make continue` resumes it"
    if state == "interrupted" and not reason:
        reason = "stopped; `make continue` resumes it"
    return state, reason


def report(matrix_dir: Path, now: float) -> list[str]:
    """The lines of ``make status`` for ``matrix_dir`` (which has a ledger) at time ``now``."""
    runs = results.load_matrix(matrix_dir)
    entries = (results.read_json(matrix_dir / results.LEDGER) or {}).get("runs", [])
    reasons = {e.get("run_id"): e.get("reason") for e in entries if isinstance(e, dict)}
    runner = MatrixLock.holder(matrix_dir)
    lines = [f"matrix {matrix_dir}, " + (f"run by pid {runner}" if runner else "not being run")]
    width = max((len(r.run_id) for r in runs), default=0)
    counts = dict.fromkeys(STATES, 0)
    for run in runs:
        state, reason = _state(run, reasons.get(run.run_id), runner)
        counts[state] += 1
        lines.append(f"  {state:<11}  {run.run_id:<{width}}  {_detail(run, state, reason, now)}".rstrip())
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    lines.append(f"{len(runs)} run{'' if len(runs) == 1 else 's'}" + (f": {summary}" if summary else ""))
    return lines
