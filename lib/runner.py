"""Run a matrix: plan it, keep its ledger, train every run in its own process, resume what was interrupted.

``python -m lib.runner run``      expand ``.config`` (+ overrides) and run the matrix (``make``)
``python -m lib.runner plan``     print the runs without running anything (``make plan``)
``python -m lib.runner continue`` resume a matrix from its ledger, not from ``.config`` (``make continue``)

The ledger ``RESULTS_DIR/<matrix>/matrix.json`` lists every run with its full resolved config and its state
(pending, running, done, failed, interrupted). Only the process holding the matrix's lock (``.lock``, an
``flock``) writes it, atomically. A second ``make`` on the same matrix refuses at once. If this process is
killed, its training processes die with it (``PR_SET_PDEATHSIG`` on Linux) and the lock is released by the
kernel; runs left ``running`` are resumed from their checkpoints by the next ``make continue``. Failed runs
are retried once per invocation, and said so.
"""

from __future__ import annotations

if __name__ == "__main__":  # before the slow imports: a `make` killed in its first instant takes us with it
    from lib.process import die_with_parent

    die_with_parent()

import argparse  # noqa: E402 (imports follow the parent-death check on purpose)
import fcntl  # noqa: E402
import functools  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from tqdm import tqdm  # noqa: E402
from tqdm.contrib.logging import logging_redirect_tqdm  # noqa: E402

from lib import config as config_mod  # noqa: E402
from lib import results  # noqa: E402
from lib.errors import ArgumentParser, UserError, run_cli  # noqa: E402
from lib.matrix import RunSpec, expand, format_plan  # noqa: E402
from lib.model_registry import MODELS  # noqa: E402
from lib.process import STOP_SIGNALS, child_env, die_with_parent, usable_cpus  # noqa: E402

logger = logging.getLogger("runner")

POLL_SECONDS = 0.2
# After a stop signal, how long a training process may take to reach its next step boundary and save its
# checkpoint before it is killed (it then resumes from its last periodic checkpoint instead).
STOP_GRACE_SECONDS = 300


# --------------------------------------------------------------------------- ledger and lock


class MatrixLock:
    """An exclusive, non-blocking ``flock`` on ``<matrix>/.lock``; the kernel drops it if we die."""

    def __init__(self, matrix_dir: Path) -> None:
        self.path = matrix_dir / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> MatrixLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise UserError(
                f"{self.path.parent} is in use by another `make` (pid {holder}); wait for it to finish "
                "or stop it, then `make continue`"
            ) from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.fd is not None
        os.close(self.fd)


class Ledger:
    """``matrix.json``: every run's resolved config and state. Written atomically after every change."""

    def __init__(self, matrix_dir: Path) -> None:
        self.matrix_dir = matrix_dir
        self.path = matrix_dir / results.LEDGER
        self.data = results.read_json(self.path) or {
            "name": matrix_dir.name,
            "created": time.time(),
            "runs": [],
        }
        self.runs: dict[str, dict] = {r["run_id"]: r for r in self.data["runs"]}

    def save(self) -> None:
        self.data["runs"] = list(self.runs.values())
        self.data["updated"] = time.time()
        results.atomic_write_json(self.path, self.data)

    def merge(self, specs: list[RunSpec]) -> None:
        """Add new runs; a known run id whose config changed is an error (its results would be mixed)."""
        for spec in specs:
            config = spec.to_json()
            known = self.runs.get(spec.run_id)
            if known is None:
                self.runs[spec.run_id] = {
                    "run_id": spec.run_id,
                    "config": config,
                    "state": "pending",
                    "attempts": 0,
                    "reason": None,
                }
            elif known["config"] != config:
                old, new = known["config"]["values"], config["values"]
                changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                what = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:3])
                raise UserError(
                    f"run {spec.run_id} in {self.matrix_dir} was made with a different config ({what}); "
                    f"use a new MATRIX_NAME, `make continue` to finish it as it was, or "
                    f"`make clean-results MATRIX={self.matrix_dir}`"
                )

    def specs(self) -> list[RunSpec]:
        return [RunSpec.from_json(r["config"]) for r in self.runs.values()]


# --------------------------------------------------------------------------- scheduling


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


def _prepare_run_dir(matrix_dir: Path, entry: dict) -> Path:
    run_dir = matrix_dir / entry["run_id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / results.CONFIG).exists():
        results.atomic_write_json(run_dir / results.CONFIG, entry["config"])
    return run_dir


def execute(
    matrix_dir: Path, ledger: Ledger, jobs: int, jobs_per_gpu: int, device: str, procs: int = 1, torchrun: str = ""
) -> int:
    """Train every run of the ledger that is not done; returns the number of failed runs. With ``procs`` > 1
    each run is ``procs`` data-parallel processes started by torchrun (``torchrun`` = extra arguments), on
    ``procs`` GPUs of its own when there are GPUs."""
    entries = list(ledger.runs.values())
    todo = []
    for e in entries:
        if e["state"] == "done":
            continue
        if e["state"] == "failed":
            logger.info("retrying failed run %s once (last failure: %s)", e["run_id"], e["reason"])
        elif e["state"] in ("running", "interrupted"):
            logger.info("resuming interrupted run %s from its checkpoint", e["run_id"])
        todo.append(e)
    done_before = len(entries) - len(todo)
    if done_before:
        logger.info("%d of %d runs already done, skipped", done_before, len(entries))

    gpus = gpu_groups(_visible_gpus(device), procs)
    slots = jobs
    if gpus:
        slots = min(jobs, len(gpus) * jobs_per_gpu)
        if slots < jobs:
            unit = "GPU(s)" if procs == 1 else f"group(s) of {procs} GPUs"
            logger.info("JOBS=%d capped to %d: %d %s x JOBS_PER_GPU=%d", jobs, slots, len(gpus), unit, jobs_per_gpu)
    threads = max(1, usable_cpus() // (slots * procs))

    matrix_bar = tqdm(
        total=len(entries),
        initial=done_before,
        desc="matrix",
        unit="run",
        position=0,
        dynamic_ncols=True,
        disable=None,
    )
    running: list[Job] = []
    failed = 0
    queue = list(todo)
    try:
        while queue or running:
            free = [s for s in range(slots) if s not in {j.slot for j in running}]
            while queue and free:
                entry = queue.pop(0)
                slot = free.pop(0)
                gpu = gpus[slot % len(gpus)] if gpus else None
                running.append(_launch(matrix_dir, ledger, entry, slot, gpu, threads, procs, torchrun))
            time.sleep(POLL_SECONDS)
            for job in list(running):
                status = results.read_json(matrix_dir / job.run_id / results.STATUS, {})
                if status.get("total_steps"):
                    job.bar.total = status["total_steps"]
                    job.bar.n = status.get("step", 0)
                    job.bar.refresh()
                rc = job.process.poll()
                if rc is None:
                    continue
                running.remove(job)
                job.bar.close()
                job.log.close()
                state, reason = results.outcome(matrix_dir / job.run_id, rc)
                entry = ledger.runs[job.run_id]
                entry["state"], entry["reason"] = state, reason
                ledger.save()
                matrix_bar.update(1)
                if state == "interrupted":
                    logger.error("STOPPED %s: %s", job.run_id, reason)
                elif state == "done":
                    run = results.load_run(matrix_dir / job.run_id)
                    final = run.final()
                    logger.info("done    %s  %s=%s", job.run_id, run.metric, final if final is None else f"{final:.4f}")
                else:
                    failed += 1
                    logger.error("FAILED  %s: %s", job.run_id, reason)
    except KeyboardInterrupt:
        _stop(matrix_dir, ledger, running)
        raise
    finally:
        matrix_bar.close()
    return failed


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


def _launch(
    matrix_dir: Path,
    ledger: Ledger,
    entry: dict,
    slot: int,
    gpu: str | None,
    threads: int,
    procs: int = 1,
    torchrun: str = "",
) -> Job:
    run_dir = _prepare_run_dir(matrix_dir, entry)
    entry["state"] = "running"
    entry["attempts"] += 1
    entry["reason"] = None
    ledger.save()
    env = child_env()
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    model = entry["config"]["axes"]["model"]
    cmd = [sys.executable, "-m", MODELS[model], "--run-dir", str(run_dir), "--threads", str(threads)]
    if procs > 1:  # torchrun starts the entrypoint `procs` times; extra arguments (multi-node) as given
        launcher = shlex.split(torchrun) or ["--standalone"]
        cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, f"--nproc-per-node={procs}", *cmd[1:]]
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


# --------------------------------------------------------------------------- commands


def _finish(matrix_dir: Path, ledger: Ledger, failed: int) -> int:
    states = [r["state"] for r in ledger.runs.values()]
    logger.info(
        "%s: %d done, %d failed, %d interrupted, %d runs",
        matrix_dir,
        states.count("done"),
        states.count("failed"),
        states.count("interrupted"),
        len(states),
    )
    if failed:
        logger.error(
            "%d run(s) failed; reasons in %s; `make continue` retries them once",
            failed,
            matrix_dir / results.LEDGER,
        )
    if states.count("interrupted"):
        logger.error("%d run(s) were stopped by a signal; `make continue` resumes them", states.count("interrupted"))
    if failed or states.count("interrupted"):
        return 1
    logger.info(
        "next: `make update-graphs` writes %s and %s",
        matrix_dir / results.GRAPHS,
        matrix_dir / results.REPORT,
    )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config, config_mod.split_overrides(args.set))
    plan = expand(cfg)
    print(format_plan(plan, str(results.matrix_dir(cfg))))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config, config_mod.split_overrides(args.set))
    plan = expand(cfg)
    for note in plan.notes:
        logger.info("rule: %s", note)
    matrix_dir = results.writable_dir(
        results.matrix_dir(cfg),
        "RESULTS_DIR",
        'set RESULTS_DIR to a directory you can write (`make menuconfig`, or `make SET="RESULTS_DIR=<dir>"`)',
    )
    with MatrixLock(matrix_dir):
        ledger = Ledger(matrix_dir)
        ledger.merge(plan.runs)
        ledger.save()
        results.point_latest(matrix_dir)
        logger.info("matrix %s: %d runs, JOBS=%d", matrix_dir, len(ledger.runs), cfg["JOBS"])
        with logging_redirect_tqdm():  # log lines print above the progress bars instead of through them
            failed = execute(
                matrix_dir,
                ledger,
                cfg["JOBS"],
                cfg["JOBS_PER_GPU"],
                cfg["DEVICE"],
                cfg["DDP_PROCS"],
                cfg["DDP_TORCHRUN_ARGS"],
            )
        return _finish(matrix_dir, ledger, failed)


def _note_config_difference(path: str, cfg, matrix_dir: Path, ledger: Ledger) -> None:
    """Say so when .config would make a different matrix than the ledger records: the ledger wins."""
    if cfg is None:
        return
    if results.matrix_dir(cfg).resolve() != matrix_dir:
        logger.warning(
            "note: %s describes %s, not %s; continuing the latter", path, results.matrix_dir(cfg), matrix_dir
        )
        return
    try:
        wanted = {spec.run_id: spec.to_json() for spec in expand(cfg).runs}
    except UserError as e:
        logger.warning("note: %s does not expand (%s); continuing from the ledger alone", path, e)
        return
    recorded = {run_id: entry["config"] for run_id, entry in ledger.runs.items()}
    if wanted == recorded:
        return
    added, removed = sorted(set(wanted) - set(recorded)), sorted(set(recorded) - set(wanted))
    changed = sorted(k for k in set(wanted) & set(recorded) if wanted[k] != recorded[k])
    kinds = (("added", added), ("removed", removed), ("changed", changed))
    diff = ", ".join(f"{len(ids)} run(s) {what}" for what, ids in kinds if ids)
    logger.warning(
        "note: %s differs from the ledger of %s (%s); the ledger wins: `make continue` finishes the matrix as it "
        "was recorded (run `make` to run .config's matrix)",
        path,
        matrix_dir,
        diff,
    )


def cmd_continue(args: argparse.Namespace) -> int:
    # JOBS= is checked as Kconfig checks JOBS (type and range), like every other override.
    jobs = config_mod.from_defaults([f"JOBS={args.jobs}"])["JOBS"] if args.jobs else None
    place = results.resolve_matrix(args.config, config_mod.split_overrides(args.set), args.matrix)
    cfg, matrix_dir = place.config, place.path.resolve()
    if not (matrix_dir / results.LEDGER).is_file():
        raise UserError(
            f"{matrix_dir} has no {results.LEDGER}: nothing to continue; run `make` first, or pass MATRIX=<results/dir>"
        )
    fix = "make it writable, or copy the matrix somewhere writable and `make continue MATRIX=<copy>`"
    results.writable_dir(matrix_dir, "MATRIX", fix)
    with MatrixLock(matrix_dir):
        ledger = Ledger(matrix_dir)
        _note_config_difference(args.config, cfg, matrix_dir, ledger)
        values = next(iter(ledger.runs.values()))["config"]["values"]
        jobs = jobs or values["JOBS"]
        logger.info("continuing %s from its ledger: %d runs, JOBS=%d", matrix_dir, len(ledger.runs), jobs)
        with logging_redirect_tqdm():
            failed = execute(
                matrix_dir,
                ledger,
                jobs,
                values["JOBS_PER_GPU"],
                values["DEVICE"],
                values.get("DDP_PROCS", 1),
                values.get("DDP_TORCHRUN_ARGS", ""),
            )
        return _finish(matrix_dir, ledger, failed)


def cmd_clean_results(args: argparse.Namespace) -> int:
    if not args.matrix:
        raise UserError("clean-results needs MATRIX=<results/dir>: it deletes exactly one matrix, never all")
    matrix_dir = results.resolve_matrix(args.config, matrix=args.matrix).path.resolve()
    if not (matrix_dir / results.LEDGER).is_file():
        raise UserError(f"{matrix_dir} is not a matrix directory (no {results.LEDGER}); nothing deleted")
    with MatrixLock(matrix_dir):
        if not args.yes:
            if not sys.stdin.isatty():
                raise UserError(f"refusing to delete {matrix_dir} without confirmation; add YES=1")
            answer = input(f"delete {matrix_dir} and every run in it? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
        shutil.rmtree(matrix_dir)
    latest = matrix_dir.parent / results.LATEST
    if latest.is_symlink() and not latest.exists():
        latest.unlink()
    print(f"deleted {matrix_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m lib.runner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    commands = (("run", cmd_run), ("plan", cmd_plan), ("continue", cmd_continue), ("clean-results", cmd_clean_results))
    for name, func in commands:
        p = sub.add_parser(name)
        p.set_defaults(func=func)
        p.add_argument("--config", default=str(config_mod.DOTCONFIG), help="the .config to read")
        if name in ("run", "plan", "continue"):
            p.add_argument("--set", default="", help="overrides: 'SYM=VALUE ...' (quote values with spaces)")
        if name == "clean-results":
            p.add_argument("--matrix", default="", help="the matrix directory to delete")
            p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        if name == "continue":
            p.add_argument("--matrix", default="", help="matrix directory (default: RESULTS_DIR/latest)")
            p.add_argument("--jobs", default="", help="parallel runs (default: the ledger's JOBS)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for sig in STOP_SIGNALS[1:]:  # SIGTERM and SIGUSR1 stop the matrix resumably, as Ctrl-C does
        signal.signal(sig, _interrupt)
    return args.func(args)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    run_cli(main)
