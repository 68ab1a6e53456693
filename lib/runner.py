"""Run a matrix: plan it, keep its ledger, train every run in its own process, resume what was interrupted.

``python -m lib.runner run``      expand ``.config`` (+ overrides) and run the matrix (``make``)
``python -m lib.runner plan``     print the runs without running anything (``make plan``)
``python -m lib.runner continue`` resume a matrix from its ledger, not from ``.config`` (``make continue``)
``python -m lib.runner status``   each run's state, progress and ETA, from the ledger (``make status``)
``python -m lib.runner estimate`` each run's steps and estimated time, from the ledger (``make estimate``)

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
import logging  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from tqdm.contrib.logging import logging_redirect_tqdm  # noqa: E402

from lib import config as config_mod  # noqa: E402
from lib import results, slurm, tracking  # noqa: E402
from lib import status as status_mod  # noqa: E402
from lib.errors import ArgumentParser, UserError, run_cli  # noqa: E402
from lib.estimate import Estimate, items, paces  # noqa: E402
from lib.ledger import Ledger, MatrixLock  # noqa: E402
from lib.matrix import expand, format_plan  # noqa: E402
from lib.process import STOP_SIGNALS  # noqa: E402
from lib.registry import Registry  # noqa: E402
from lib.scheduler import execute  # noqa: E402

logger = logging.getLogger("runner")

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


# --------------------------------------------------------------------------- launchers
# LAUNCHER_<NAME> -> how a matrix's runs that are not done get started; each returns the command's exit status.

LAUNCHERS: Registry = Registry("launcher", "LAUNCHER")
PREFLIGHTS = {"slurm": slurm.preflight}  # checks a launcher makes before the ledger is first written


@LAUNCHERS.register("local")
def launch_local(matrix_dir: Path, ledger: Ledger, values: dict, jobs: int) -> int:
    """Train the runs on this machine, ``jobs`` at a time, until the matrix is finished or stopped."""
    logger.info("training on this machine, JOBS=%d", jobs)
    with logging_redirect_tqdm():  # log lines print above the progress bars instead of through them
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


@LAUNCHERS.register("slurm")
def launch_slurm(matrix_dir: Path, ledger: Ledger, values: dict, jobs: int) -> int:
    """Submit the runs to Slurm and return (lib.slurm); a second call collects and resubmits."""
    slurm.launch(matrix_dir, ledger, values)
    states = [r["state"] for r in ledger.runs.values()]
    logger.info(
        "%s: %d done, %d in Slurm, %d runs; `make status` shows them",
        matrix_dir,
        states.count("done"),
        states.count("submitted"),
        len(states),
    )
    if states.count("done") == len(states):
        logger.info(
            "next: `make update-graphs` writes %s and %s", matrix_dir / results.GRAPHS, matrix_dir / results.REPORT
        )
    return 0


def _known(matrix_dir: Path) -> list[results.Run]:
    """The runs of a matrix on disk (none when it has no ledger yet): their state and pace for the estimate."""
    return results.load_matrix(matrix_dir) if (matrix_dir / results.LEDGER).is_file() else []


def cmd_plan(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config, config_mod.split_overrides(args.set))
    plan = expand(cfg)
    where = results.matrix_dir(cfg)
    known = _known(where)
    estimate = Estimate(items(plan.runs, known), paces(known), cfg["JOBS"])
    print(format_plan(plan, str(where), estimate.columns(), estimate.lines(str(where))))
    return 0


def _recorded_matrix(args: argparse.Namespace, what: str) -> Path:
    """The matrix ``MATRIX=`` (or ``RESULTS_DIR/latest``) names, which must have a ledger."""
    place = results.resolve_matrix(args.config, config_mod.split_overrides(args.set), args.matrix)
    matrix_dir = place.path.resolve()
    if not (matrix_dir / results.LEDGER).is_file():
        raise UserError(
            f"{matrix_dir} has no {results.LEDGER}: nothing to {what}; run `make` first, or pass MATRIX=<results/dir>"
        )
    return matrix_dir


def cmd_status(args: argparse.Namespace) -> int:
    print("\n".join(status_mod.report(_recorded_matrix(args, "report"), time.time())))
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    jobs = config_mod.from_defaults([f"JOBS={args.jobs}"])["JOBS"] if args.jobs else None
    matrix_dir = _recorded_matrix(args, "estimate")
    ledger = Ledger(matrix_dir)
    known = results.load_matrix(matrix_dir)
    jobs = jobs or next(iter(ledger.runs.values()))["config"]["values"]["JOBS"]
    estimate = Estimate(items(ledger.specs(), known), paces(known), jobs)
    columns = estimate.columns()
    width = max(len(run_id) for run_id in columns)
    lines = [f"matrix {matrix_dir}"]
    lines += [f"  {i.run_id:<{width}}  {columns[i.run_id]}{'  done' if i.done else ''}" for i in estimate.runs]
    print("\n".join(lines + estimate.lines(str(matrix_dir))))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config, config_mod.split_overrides(args.set))
    plan = expand(cfg)
    tracking.preflight(cfg)  # a tracker that cannot start is one line now, not a warning in every run
    for note in plan.notes:
        logger.info("rule: %s", note)
    matrix_dir = results.writable_dir(
        results.matrix_dir(cfg),
        "RESULTS_DIR",
        'set RESULTS_DIR to a directory you can write (`make menuconfig`, or `make SET="RESULTS_DIR=<dir>"`)',
    )
    with MatrixLock(matrix_dir):
        if cfg["LAUNCHER"] != "local":  # what can be checked before anything is written
            PREFLIGHTS[cfg["LAUNCHER"]](cfg.to_json())
        ledger = Ledger(matrix_dir)
        ledger.merge(plan.runs)
        ledger.save()
        results.point_latest(matrix_dir)
        logger.info("matrix %s: %d runs, JOBS=%d", matrix_dir, len(ledger.runs), cfg["JOBS"])
        return LAUNCHERS[cfg["LAUNCHER"]](matrix_dir, ledger, cfg.to_json(), cfg["JOBS"])


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
    results.writable_matrix(matrix_dir, "continue")
    with MatrixLock(matrix_dir):
        ledger = Ledger(matrix_dir)
        _note_config_difference(args.config, cfg, matrix_dir, ledger)
        values = next(iter(ledger.runs.values()))["config"]["values"]
        tracking.preflight(config_mod.Config.from_json(values))  # the trackers the ledger's runs will use
        jobs = jobs or values["JOBS"]
        logger.info("continuing %s from its ledger: %d runs", matrix_dir, len(ledger.runs))
        return LAUNCHERS[values.get("LAUNCHER", "local")](matrix_dir, ledger, values, jobs)


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
    commands = (
        ("run", cmd_run),
        ("plan", cmd_plan),
        ("continue", cmd_continue),
        ("status", cmd_status),
        ("estimate", cmd_estimate),
        ("clean-results", cmd_clean_results),
    )
    for name, func in commands:
        p = sub.add_parser(name)
        p.set_defaults(func=func)
        p.add_argument("--config", default=str(config_mod.DOTCONFIG), help="the .config to read")
        if name in ("run", "plan", "continue", "status", "estimate"):
            p.add_argument("--set", default="", help="overrides: 'SYM=VALUE ...' (quote values with spaces)")
        if name == "clean-results":
            p.add_argument("--matrix", default="", help="the matrix directory to delete")
            p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        if name in ("continue", "status", "estimate"):
            p.add_argument("--matrix", default="", help="matrix directory (default: RESULTS_DIR/latest)")
        if name in ("continue", "estimate"):
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
