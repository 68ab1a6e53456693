"""Experiment trackers: ``TRACKER_<NAME>`` -> ``TRACKERS["<name>"]``, any number of them at once.

metrics.jsonl is always written and is the record graphs and reports read; each selected tracker mirrors the
same rows to a dashboard through one fan-out, :class:`Trackers`, which never lets a tracker end a run: any
error a tracker raises (starting, logging, finishing) is one warning naming it, that tracker is off for the
rest of the run, and training goes on. What can be known before a run starts (the package is installed, wandb
has credentials or is offline) is checked once before a matrix starts, by :func:`preflight`, with one clear
line.

Naming: the project is TRACKER_PROJECT or, when that is empty, ``<model>-<8 hex of the SHA-256 of the
matrix's resolved config>`` (:func:`project`); the group is the matrix, the name the run id. A resumed run
continues the same tracker run (wandb: the same id, :func:`run_key`; trackio: the same name) and
does not send again the steps it sent before it was interrupted: :func:`lib.checkpoint.resume_training` records
the last step metrics.jsonl had before it was cut back, and the fan-out skips the rows up to it.

``python -m lib.tracking test trackio|wandb`` logs a short synthetic run through the same fan-out (``make
trackio-test``, ``make wandb-test``); ``python -m lib.tracking view`` opens trackio's dashboard (``make
trackio-view``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib import results
from lib.errors import ArgumentParser, UserError, run_cli
from lib.registry import Registry

logger = logging.getLogger(__name__)

INSTALL = 'make env EXTRAS="trackio wandb"'
SUMMARY_LEFT_OUT = ("axes", "layer_sparsity")  # repeated elsewhere (config) or one number per layer
WANDB_ID_LENGTH = 64


@dataclass(frozen=True)
class TrackedRun:
    """What a tracker is told about the run it mirrors."""

    project: str
    group: str  # the matrix
    name: str  # the run id
    key: str  # stable over the run's life, resumes included (wandb's run id)
    config: dict
    resumed: bool  # continue the tracker run of the same name/key instead of starting one
    directory: Path | None = None  # the run directory, for trackers that keep files (None: their default)


class Tracker:
    """One dashboard. A subclass names its ``package`` (also its extra in pyproject.toml) and implements
    :meth:`start`, :meth:`log` and :meth:`finish`; any of them may raise, :class:`Trackers` handles it."""

    package = ""

    def __init__(self) -> None:
        self.module = importlib.import_module(self.package)

    def start(self, run: TrackedRun) -> str:
        """Open (or continue) the tracker's run; returns where to look at it."""
        raise NotImplementedError

    def log(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def finish(self, summary: dict[str, float] | None, step: int) -> None:
        """Close the run; ``summary`` (final and best results, ...) goes into its summary when given."""
        raise NotImplementedError

    @classmethod
    def problem(cls) -> str | None:
        """Why this tracker cannot start on this machine, with the fix; None when it can."""
        try:
            importlib.import_module(cls.package)
        except ImportError as e:
            return f"the {cls.package} package is not installed ({e}): `{INSTALL}` installs the trackers"
        return None


TRACKERS: Registry[type[Tracker]] = Registry("tracker", "TRACKER")


@TRACKERS.register("trackio")
class TrackioTracker(Tracker):
    """trackio: a local SQLite database per project under TRACKIO_DIR. trackio has no run summary, so the
    summary is logged as one last row of ``summary/...`` metrics at the run's last step."""

    package = "trackio"

    def start(self, run: TrackedRun) -> str:
        self.run = self.module.init(
            project=run.project,
            name=run.name,
            group=run.group,
            config=run.config,
            resume="allow" if run.resumed else "never",
            embed=False,
        )
        return f"trackio project {run.project} under {self.module.utils.TRACKIO_DIR} (`make trackio-view`)"

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, summary: dict[str, float] | None, step: int) -> None:
        if summary:
            self.run.log({f"summary/{k}": v for k, v in summary.items()}, step=step)
        self.module.finish()  # the module's, so that its exit hook has no run left to finish again


@TRACKERS.register("wandb")
class WandbTracker(Tracker):
    """Weights & Biases; its files go to the run directory unless WANDB_DIR says otherwise."""

    package = "wandb"

    def start(self, run: TrackedRun) -> str:
        self.run = self.module.init(
            project=run.project,
            group=run.group,
            name=run.name,
            id=run.key,
            config=run.config,
            resume="allow",
            dir=None if os.environ.get("WANDB_DIR") or run.directory is None else str(run.directory),
            settings=self.module.Settings(console="off"),  # log.txt is the console's record
        )
        if self.run.settings.mode == "offline":
            where = Path(self.run.dir).parent
            return f"wandb offline run in {where} (`wandb sync {where}` uploads it)"
        return f"wandb run {self.run.url or run.key}"

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, summary: dict[str, float] | None, step: int) -> None:
        if summary:
            self.run.summary.update(summary)
        self.run.finish()

    @classmethod
    def problem(cls) -> str | None:
        missing = super().problem()
        if missing:
            return missing
        wandb = importlib.import_module("wandb")
        try:
            if wandb.setup().settings.mode in ("offline", "disabled", "dryrun"):
                return None
            if wandb.login(prompt=False, verify=False):
                return None
        except Exception as e:  # e.g. a WANDB_API_KEY that is not a key
            return f"wandb cannot start ({_one_line(e)}): fix it, run `wandb login`, or set WANDB_MODE=offline"
        finally:
            wandb.teardown()
        return "wandb is not logged in: run `wandb login` once, or set WANDB_MODE=offline to log without a network"


class Trackers:
    """The selected trackers as one: :meth:`init`, :meth:`log` per metrics row, :meth:`finish` with the summary.

    A tracker that raises is switched off with one warning (``failed`` keeps why) and the others go on. Rows
    with a step up to ``skip_through`` are not sent: a resumed run replays the steps after its checkpoint, and
    the trackers already have those up to where the run was interrupted.
    """

    def __init__(self, names: Iterable[str] = (), skip_through: int | None = None) -> None:
        self.names = list(names)
        self.skip_through = skip_through
        self.active: dict[str, Tracker] = {}
        self.where: dict[str, str] = {}  # tracker -> where to look at the run
        self.failed: dict[str, str] = {}  # tracker -> what went wrong
        self.step = 0  # the last step seen, sent or not

    def init(
        self,
        project: str,
        *,
        group: str,
        name: str,
        config: dict,
        key: str | None = None,
        resumed: bool = False,
        directory: Path | None = None,
    ) -> None:
        run = TrackedRun(project, group, name, key or name, config, resumed, directory)
        for tracker_name in self.names:
            try:
                tracker = TRACKERS[tracker_name]()
                self.where[tracker_name] = tracker.start(run)
            except Exception as e:
                self._off(tracker_name, "start", e)
            else:
                self.active[tracker_name] = tracker
                logger.info("tracking %s: %s", name, self.where[tracker_name])

    def log(self, row: dict, step: int) -> None:
        self.step = max(self.step, step)
        if self.skip_through is not None and step <= self.skip_through:
            return
        metrics = row_metrics(row)
        self._each("log", lambda tracker: tracker.log(metrics, step))

    def finish(self, summary: dict | None) -> None:
        """Close every tracker's run; ``summary`` (summary.json) goes into the trackers' run summaries."""
        metrics = summary_metrics(summary) if summary else None
        self._each("finish", lambda tracker: tracker.finish(metrics, self.step))
        self.active.clear()

    def _each(self, what: str, call: Callable[[Tracker], None]) -> None:
        for name, tracker in list(self.active.items()):
            try:
                call(tracker)
            except Exception as e:
                self._off(name, what, e)

    def _off(self, name: str, what: str, error: Exception) -> None:
        self.active.pop(name, None)
        self.failed[name] = f"{what}: {_one_line(error)}"
        logger.warning(
            "tracker %s: %s failed (%s); %s is off for the rest of this run, metrics.jsonl keeps every row",
            *(name, what, _one_line(error), name),
        )


def row_metrics(row: dict) -> dict[str, float]:
    """A metrics.jsonl row as a tracker's metrics: every number as ``<split>/<key>`` (nested keys joined with
    '/'), without the split and the step themselves."""
    split = row.get("split", "train")
    return _numbers({k: v for k, v in row.items() if k not in ("split", "step")}, f"{split}/")


def summary_metrics(summary: dict) -> dict[str, float]:
    """summary.json's numbers: ``final/<metric>``, ``best/<metric>``, ``best/step``, ``sparsity``, ..."""
    return _numbers({k: v for k, v in summary.items() if k not in SUMMARY_LEFT_OUT})


def _numbers(values: dict, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out


def _one_line(error: BaseException) -> str:
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# --------------------------------------------------------------------------- a run's trackers


def selected(cfg: Any) -> list[str]:
    """The trackers ``cfg`` selects; a symbol it does not have is off (a run recorded before trackers were
    bools has ``TRACKER="none"`` and its choice members)."""
    return [name for name in TRACKERS.names() if cfg.get(TRACKERS.symbol(name))]


def project(cfg: Any, model: str) -> str:
    """TRACKER_PROJECT, or when it is empty ``<model>-<8 hex of the SHA-256 of the resolved config>``."""
    text = json.dumps(cfg.to_json(), sort_keys=True, separators=(",", ":"))
    return cfg.get("TRACKER_PROJECT") or f"{model}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def run_key(matrix: str, run_id: str, started: float | None) -> str:
    """wandb's run id: the run id (characters wandb refuses replaced) and 8 hex digits of the matrix, the run id
    and the time the run started from step 0, so it is the same on every resume and new when a run starts over
    (after its results were deleted, say) instead of continuing a finished tracker run."""
    digest = hashlib.sha256(f"{matrix}/{run_id}/{started}".encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]', '-', run_id)[: WANDB_ID_LENGTH - 9]}-{digest}"


def for_run(spec: Any, run_dir: Path, resumed: bool) -> Trackers:
    """A run's trackers, started: named from its spec, continuing the same tracker runs when ``resumed`` and
    skipping the steps they had before the interruption (env.json's ``resumed`` records, written by
    :func:`lib.checkpoint.resume_training`)."""
    cfg, env = spec.cfg, results.read_json(run_dir / results.ENV, {}) or {}
    sent = [record.get("logged_step", -1) for record in env.get("resumed", [])] if resumed else []
    trackers = Trackers(selected(cfg), skip_through=max(sent, default=None))
    if trackers.names:
        trackers.init(
            project(cfg, spec.axes["model"]),
            group=spec.matrix,
            name=spec.run_id,
            config=spec.to_json(),
            key=run_key(spec.matrix, spec.run_id, env.get("started")),
            resumed=resumed,
            directory=run_dir,
        )
    return trackers


def check(names: Iterable[str]) -> None:
    """One :class:`UserError` naming every tracker of ``names`` that cannot start here, and the fix."""
    problems = [f"{TRACKERS.symbol(name)}: {p}" for name in names if (p := TRACKERS[name].problem())]
    if problems:
        raise UserError("; ".join(problems))


def preflight(cfg: Any) -> None:
    """Before a matrix starts: every tracker ``cfg`` selects can start (installed; wandb logged in or offline)."""
    check(selected(cfg))


# --------------------------------------------------------------------------- make trackio-test / wandb-test / view

TEST_PROJECT = "sparsity-lab-test"
TEST_STEPS = 30


def synthetic_rows() -> list[dict]:
    """A short made-up run: a training row per step (a falling loss), an evaluation row every 10 steps."""
    rows: list[dict] = []
    for step in range(1, TEST_STEPS + 1):
        rows.append({"split": "train", "step": step, "loss": 2.3 * math.exp(-step / 10), "lr": 1e-3})
        if step % 10 == 0:
            rows.append({"split": "eval", "step": step, "accuracy": 1 - 0.9 * math.exp(-step / 10)})
    return rows


def cmd_test(args) -> int:
    check([args.tracker])
    name = f"synthetic-{time.strftime('%Y%m%d-%H%M%S')}"
    directory = Path(tempfile.gettempdir()) / "sparsity-lab-tracking-test"  # wandb's files, not in the checkout
    directory.mkdir(exist_ok=True)
    trackers = Trackers([args.tracker])
    config = {"synthetic": True, "steps": TEST_STEPS}
    trackers.init(TEST_PROJECT, group="synthetic", name=name, config=config, directory=directory)
    rows = synthetic_rows()
    for row in rows:
        trackers.log(row, row["step"])
    evals = [row for row in rows if row["split"] == "eval"]
    trackers.finish({"final": evals[-1], "best": max(evals, key=lambda row: row["accuracy"])})
    if trackers.failed:
        print(f"{args.tracker} failed ({trackers.failed[args.tracker]}); see the warning above")
        return 1
    print(f"logged {len(rows)} rows of run {name}: {trackers.where[args.tracker]}")
    return 0


def cmd_view(args) -> int:
    check(["trackio"])
    import trackio

    trackio.show()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m lib.tracking", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    test = sub.add_parser("test", help="log a short synthetic run to one tracker")
    test.add_argument("tracker", choices=TRACKERS.names())
    test.set_defaults(func=cmd_test)
    sub.add_parser("view", help="open trackio's local dashboard").set_defaults(func=cmd_view)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return args.func(args)


if __name__ == "__main__":
    run_cli(main)
