"""Scheduling a matrix's runs: one training process per run (torchrun with DDP), ``JOBS`` at a time, one GPU (or
GPU group) per job, progress from each run's ``status.json``, the ledger updated as each run ends. Progress is a
bar per run on a terminal; when stderr is not one (nohup, a batch scheduler's log) it is a timestamped line as
each run starts and ends and, every :data:`lib.progress.LINE_EVERY_SECONDS`, one per running run with its step
and ETA.

A stop (Ctrl-C, SIGTERM, SIGUSR1 reach this process as ``KeyboardInterrupt``) is forwarded once to every
running training process, which checkpoints at its next step boundary and exits as interrupted; a second
interrupt kills them. Every child is tied to this process (``PR_SET_PDEATHSIG`` set before it execs, with a
check that this process is still its parent), so nothing outlives a killed runner.
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from lib import config as config_mod
from lib import results
from lib.errors import UserError
from lib.ledger import Ledger
from lib.model_registry import MODELS
from lib.process import child_env, die_with_parent, usable_cpus
from lib.progress import Lines, describe

logger = logging.getLogger("runner")

POLL_SECONDS = 0.2
# After a stop signal, how long a training process may take to reach its next step boundary and save its
# checkpoint before it is killed (it then resumes from its last periodic checkpoint instead).
STOP_GRACE_SECONDS = 300


def _visible_gpus(device: str) -> list[str]:
    """GPU ids a job may be pinned to; empty when runs train on CPU/MPS."""
    if device in ("cpu", "mps"):
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def gpu_groups(visible: list[str], procs: int) -> list[str]:
    """CUDA_VISIBLE_DEVICES values, one per job slot: ``procs`` GPUs each (one without DDP); GPUs left over
    when ``procs`` does not divide their number stay idle."""
    if visible and len(visible) < procs:
        raise UserError(f"DDP_PROCS={procs} needs {procs} GPUs per run but {len(visible)} are visible; lower DDP_PROCS")
    return [",".join(visible[i : i + procs]) for i in range(0, len(visible) - procs + 1, procs)]


@dataclass
class Job:
    run_id: str
    process: subprocess.Popen
    slot: int
    gpu: str | None
    bar: tqdm
    log: object


def train_command(run_dir: Path, model: str, threads: int, procs: int = 1, torchrun: list[str] | None = None) -> list:
    """The command that trains one run: the model's entrypoint, or with ``procs`` > 1 torchrun starting it
    ``procs`` times on this node (``torchrun``: its extra arguments, multi-node; none: ``--standalone``).
    The local scheduler and a Slurm job (on each of its nodes) run exactly this."""
    cmd = [sys.executable, "-m", MODELS[model], "--run-dir", str(run_dir), "--threads", str(threads)]
    if procs > 1 or torchrun:
        launcher = torchrun or ["--standalone"]
        cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, f"--nproc-per-node={procs}", *cmd[1:]]
    return cmd


def prepare_run_dir(matrix_dir: Path, entry: dict) -> Path:
    run_dir = matrix_dir / entry["run_id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / results.CONFIG).exists():
        results.atomic_write_json(run_dir / results.CONFIG, entry["config"])
    return run_dir


@dataclass(frozen=True)
class Resources:
    """Where runs train: ``slots`` jobs at once, the GPU (group) of each slot, CPU threads per process."""

    slots: int
    gpus: list[str]
    threads: int
    procs: int = 1
    torchrun: str = ""

    @classmethod
    def plan(cls, jobs: int, jobs_per_gpu: int, device: str, procs: int = 1, torchrun: str = "") -> Resources:
        gpus = gpu_groups(_visible_gpus(device), procs)
        slots = jobs
        if gpus:
            slots = min(jobs, len(gpus) * jobs_per_gpu)
            if slots < jobs:
                unit = "GPU(s)" if procs == 1 else f"group(s) of {procs} GPUs"
                logger.info("JOBS=%d capped to %d: %d %s x JOBS_PER_GPU=%d", jobs, slots, len(gpus), unit, jobs_per_gpu)
        return cls(slots, gpus, max(1, usable_cpus() // (slots * procs)), procs, torchrun)

    def gpu(self, slot: int) -> str | None:
        return self.gpus[slot % len(self.gpus)] if self.gpus else None


def _todo(ledger: Ledger) -> list[dict]:
    """The runs still to train, each said once: retried (failed) or resumed (interrupted)."""
    todo = []
    for e in ledger.runs.values():
        if e["state"] == "done":
            continue
        if e["state"] == "failed":
            logger.info("retrying failed run %s once (last failure: %s)", e["run_id"], e["reason"])
        elif e["state"] in ("running", "interrupted"):
            logger.info("resuming interrupted run %s from its checkpoint", e["run_id"])
        todo.append(e)
    done_before = len(ledger.runs) - len(todo)
    if done_before:
        logger.info("%d of %d runs already done, skipped", done_before, len(ledger.runs))
    return todo


def execute(
    matrix_dir: Path, ledger: Ledger, jobs: int, jobs_per_gpu: int, device: str, procs: int = 1, torchrun: str = ""
) -> int:
    """Train every run of the ledger that is not done; returns the number of failed runs. With ``procs`` > 1
    each run is ``procs`` data-parallel processes started by torchrun (``torchrun`` = extra arguments), on
    ``procs`` GPUs of its own when there are GPUs."""
    queue = _todo(ledger)
    where = Resources.plan(jobs, jobs_per_gpu, device, procs, torchrun)
    total = len(ledger.runs)
    matrix_bar = tqdm(
        total=total, initial=total - len(queue), desc="matrix", unit="run", position=0, dynamic_ncols=True, disable=None
    )
    running: list[Job] = []
    failed = 0
    lines = Lines()  # writes only when stderr is not a terminal
    try:
        while queue or running:
            busy = {j.slot for j in running}
            for slot in [s for s in range(where.slots) if s not in busy][: len(queue)]:
                running.append(_launch(matrix_dir, ledger, queue.pop(0), slot, where))
                lines.write(f"{_done(ledger)} {running[-1].run_id}: started")
            time.sleep(POLL_SECONDS)
            for job in list(running):
                if _finished(matrix_dir, ledger, job):
                    running.remove(job)
                    matrix_bar.update(1)
                    failed += ledger.runs[job.run_id]["state"] == "failed"
                    lines.write(f"{_done(ledger)} {job.run_id}: {ledger.runs[job.run_id]['state']}")
            if lines.due():
                for job in running:
                    status = results.read_json(matrix_dir / job.run_id / results.STATUS, {})
                    lines.write(f"{_done(ledger)} {job.run_id}: {describe(status, time.time())}")
    except KeyboardInterrupt:
        _stop(matrix_dir, ledger, running)
        raise
    finally:
        matrix_bar.close()
    return failed


def _done(ledger: Ledger) -> str:
    """``[3/6 done]``: the matrix's progress, for a progress line."""
    states = [e["state"] for e in ledger.runs.values()]
    return f"[{states.count('done')}/{len(states)} done]"


def _finished(matrix_dir: Path, ledger: Ledger, job: Job) -> bool:
    """Refresh the job's progress bar; when its process has ended, record the outcome in the ledger and say it."""
    status = results.read_json(matrix_dir / job.run_id / results.STATUS, {})
    if status.get("total_steps"):
        job.bar.total = status["total_steps"]
        job.bar.n = status.get("step", 0)
        job.bar.refresh()
    rc = job.process.poll()
    if rc is None:
        return False
    job.bar.close()
    job.log.close()
    state, reason = results.outcome(matrix_dir / job.run_id, rc)
    entry = ledger.runs[job.run_id]
    entry["state"], entry["reason"] = state, reason
    ledger.save()
    if state == "interrupted":
        logger.error("STOPPED %s: %s", job.run_id, reason)
    elif state == "done":
        run = results.load_run(matrix_dir / job.run_id)
        final = run.final()
        logger.info("done    %s  %s=%s", job.run_id, run.metric, final if final is None else f"{final:.4f}")
    else:
        logger.error("FAILED  %s: %s", job.run_id, reason)
    return True


def _stop(matrix_dir: Path, ledger: Ledger, running: list[Job]) -> None:
    """Stop the running training processes resumably: each gets SIGINT, saves a checkpoint at its next step
    boundary and exits as interrupted. After ``STOP_GRACE_SECONDS``, or at a second interrupt of this
    process, the rest are killed (they resume from their last periodic checkpoint). Runs that finished in the
    meantime are recorded as done."""
    for job in running:
        job.process.send_signal(signal.SIGINT)
    if running:
        logger.error(
            "stopping %d run(s) at their next step boundary (a checkpoint each); interrupt again to kill them",
            len(running),
        )
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    try:
        for job in running:
            try:
                job.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                job.process.kill()
    except KeyboardInterrupt:
        for job in running:
            job.process.kill()
    for job in running:
        rc = job.process.wait()
        job.bar.close()
        job.log.close()
        state, _ = results.outcome(matrix_dir / job.run_id, rc)
        ledger.runs[job.run_id]["state"] = "done" if state == "done" else "interrupted"
    ledger.save()
    logger.error("interrupted: `make continue` resumes the matrix where it stopped")


def _launch(matrix_dir: Path, ledger: Ledger, entry: dict, slot: int, where: Resources) -> Job:
    run_dir = prepare_run_dir(matrix_dir, entry)
    entry["state"] = "running"
    entry["attempts"] += 1
    entry["reason"] = None
    ledger.save()
    gpu, threads, procs = where.gpu(slot), where.threads, where.procs
    env = child_env()
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    cmd = train_command(run_dir, entry["config"]["axes"]["model"], threads, procs, shlex.split(where.torchrun))
    log = open(run_dir / results.LOG, "a")
    log.write(f"$ {' '.join(cmd)}{'  # CUDA_VISIBLE_DEVICES=' + gpu if gpu else ''}\n")
    log.flush()
    process = subprocess.Popen(
        cmd,
        cwd=config_mod.ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        # In the child, before exec: tie it to this runner, or exit if the runner is already gone.
        preexec_fn=functools.partial(die_with_parent, os.getpid()),
    )
    bar = tqdm(
        total=1,
        desc=entry["run_id"],
        unit="step",
        position=slot + 1,
        leave=False,
        dynamic_ncols=True,
        disable=None,
    )
    return Job(entry["run_id"], process, slot, gpu, bar, log)
