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

Under LAUNCHER_SLURM a run given to Slurm is ``submitted`` in the ledger; beside it stands its job's state in
``squeue`` (PENDING, RUNNING with the run's progress, ...), or, once the job has left the queue, the outcome
its run directory shows, which the next ``make continue`` records.
"""

from __future__ import annotations

from pathlib import Path

from lib import results, slurm
from lib.ledger import MatrixLock
from lib.progress import describe, duration

STATES = ("done", "running", "submitted", "failed", "interrupted", "pending")
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


def _submitted(run: results.Run, entry: dict, queue: dict[str, str], now: float) -> tuple[str, str]:
    """A run given to Slurm: Slurm's state of its job beside the run's own progress; a job that has left the
    queue shows the outcome the next ``make continue`` will record."""
    job = entry["slurm"]["job"]
    where = queue.get(run.run_id, "-")
    if where == "-":
        state, reason = slurm.ended(run.path, job)
        return "submitted", f"slurm: ended (job {job}) -> {state}" + (f": {reason}" if reason else "")
    progress = describe(run.status, now) if where == "RUNNING" and run.status.get("total_steps") else ""
    return "submitted", f"slurm: {where} (job {job})" + (f"; {progress}" if progress else "")


def report(matrix_dir: Path, now: float) -> list[str]:
    """The lines of ``make status`` for ``matrix_dir`` (which has a ledger) at time ``now``."""
    runs = results.load_matrix(matrix_dir)
    entries = [e for e in (results.read_json(matrix_dir / results.LEDGER) or {}).get("runs", []) if isinstance(e, dict)]
    by_id = {e.get("run_id"): e for e in entries}
    runner = MatrixLock.holder(matrix_dir)
    lines = [f"matrix {matrix_dir}, " + (f"run by {runner}" if runner else "not being run")]
    given = [e for e in entries if e.get("slurm")]
    queue = slurm.states(given) if given else {}
    if isinstance(queue, str):  # squeue could not be read: say so once, show the ledger alone
        lines.append(f"  (Slurm's states unknown: {queue})")
        queue = {}
    width = max((len(r.run_id) for r in runs), default=0)
    counts = dict.fromkeys(STATES, 0)
    for run in runs:
        entry = by_id.get(run.run_id, {})
        if run.state == "submitted" and entry.get("slurm"):
            state, detail = _submitted(run, entry, queue, now)
        else:
            state, reason = _state(run, entry.get("reason"), runner)
            detail = _detail(run, state, reason, now)
        counts[state] += 1
        lines.append(f"  {state:<11}  {run.run_id:<{width}}  {detail}".rstrip())
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    lines.append(f"{len(runs)} run{'' if len(runs) == 1 else 's'}" + (f": {summary}" if summary else ""))
    return lines
