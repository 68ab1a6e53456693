"""Run directories and the files in them: the one place that knows their names and formats.

A run directory ``results/<matrix>/<run-id>/`` is the unit of truth. It holds:

``config.json``   the fully resolved configuration (axes + every Kconfig value) that produced the run
``status.json``   the run's live state: ``{"state": pending|running|done|failed, "step", "total_steps", ...}``
``metrics.jsonl`` one JSON object per logged step (``split: "train"``) or evaluation (``split: "eval"``)
``summary.json``  written once at the end: final/best metrics, achieved sparsity, time, memory, throughput
``checkpoint.pt`` the last checkpoint (everything needed to resume bit-exactly); ``best.pt`` the best one
``log.txt``       the run's own log (stdout and stderr of its process)
``env.json``      git SHA and dirty diff, library versions, hardware

Every write that matters goes through :func:`atomic_write_bytes`: write a temporary file in the same
directory, fsync it, rename it over the target, fsync the directory. A process killed at any instant leaves
either the old file or the new one, never half of one.

Where results live is answered here too, for every command: ``make`` writes ``RESULTS_DIR/MATRIX_NAME``
(:func:`matrix_dir`) and points ``RESULTS_DIR/latest`` at it; every command that reads a matrix (continue,
update-graphs, clean-results) takes ``MATRIX=`` or that link, through :func:`resolve_matrix`. A run is read
through :class:`Run`, whose accessors are the one interpretation of its files (state, metric, final and best
values).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lib.errors import UserError

if TYPE_CHECKING:
    from lib.config import Config

log = logging.getLogger(__name__)

CONFIG = "config.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
BEST_CHECKPOINT = "best.pt"
ONESHOT_DIR = "oneshot"  # <run>/oneshot/<method>-<target>/: make prune's and ONESHOT_AFTER_TRAINING's results
PRUNE_JSON = "prune.json"  # written last in each: its presence means the result is whole
LOG = "log.txt"
ENV = "env.json"
LEDGER = "matrix.json"
SLURM_JOB = "slurm.json"  # in a run directory under LAUNCHER_SLURM: the job that ran it last, and its exit status
GRAPHS = "graphs"
REPORT = "report.md"
SAMPLE = "sample.json"  # the report's text sample of a GPT-2 run, with what it was generated from
SAMPLES = "samples.jsonl"  # text samples written during training (GPT2_SAMPLE_INTERVAL): step, prompt, text
LATEST = "latest"  # in RESULTS_DIR: a link to the matrix `make` ran last
DENSE = "none"  # the pruning method of the dense baselines


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temp file + fsync + rename + directory fsync).

    The file gets the mode any new file gets (0666 less the user's umask), so colleagues sharing a machine
    can read results when the umask says so; ``tempfile.mkstemp`` would make every result private (0600).
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def writable_dir(path: str | os.PathLike, what: str, fix: str) -> Path:
    """Create directory ``path`` if needed and check that files can be written in it; otherwise one
    :class:`UserError` naming ``what`` (e.g. ``RESULTS_DIR``), the reason and ``fix``."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        reason = e.strerror or str(e)
        if e.errno in (errno.ENOTDIR, errno.EEXIST):
            blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
            reason = f"{blocker} is a file, not a directory" if blocker else reason
        raise UserError(f"{what}: cannot write in {path}: {reason}; {fix}") from None
    return path


def writable_matrix(path: str | os.PathLike, command: str) -> Path:
    """:func:`writable_dir` for a matrix ``make <command>`` writes into (MATRIX=, or RESULTS_DIR/latest)."""
    fix = f"make it writable, or copy the matrix somewhere writable and `make {command} MATRIX=<copy>`"
    return writable_dir(path, "MATRIX", fix)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n").encode())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file; a torn last line (a process killed mid-append) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def _jsonl(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(row, allow_nan=True) + "\n" for row in rows)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Replace a JSON-lines file atomically (used to cut metrics back to a checkpoint on resume)."""
    atomic_write_text(path, _jsonl(rows))


def append_jsonl(path: str | os.PathLike, rows: Iterable[dict], durable: bool = True) -> None:
    """Append rows (and fsync them, when ``durable``). Appends are not atomic; readers drop a torn tail and
    resume truncates. Without ``durable`` the rows are in the file (a killed process loses none of them) but may
    be lost with the machine: the training loop appends its metric rows so and calls :func:`sync_file` before
    each checkpoint, so a checkpoint never counts rows that a power cut could take back."""
    with open(path, "a") as f:
        f.write(_jsonl(rows))
        f.flush()
        if durable:
            os.fsync(f.fileno())


def sync_file(path: str | os.PathLike) -> None:
    """fsync a file already written (what :func:`append_jsonl` without ``durable`` put off)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- where results live


def results_dir(cfg: Config) -> Path:
    """``RESULTS_DIR`` of ``cfg``; a relative one is under the repository root, wherever the command runs."""
    from lib.config import ROOT  # here, not at the top: lib.config may one day read run files through us

    base = Path(cfg["RESULTS_DIR"])
    return base if base.is_absolute() else ROOT / base


def matrix_dir(cfg: Config) -> Path:
    """``RESULTS_DIR/MATRIX_NAME``: where ``make`` (``run``) writes the matrix of ``cfg``."""
    return results_dir(cfg) / cfg["MATRIX_NAME"]


def point_latest(matrix: Path) -> None:
    """Point ``RESULTS_DIR/latest`` at ``matrix`` (a relative link, replaced atomically)."""
    latest = matrix.parent / LATEST
    tmp = matrix.parent / f".{LATEST}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(matrix.name)
    os.replace(tmp, latest)


@dataclass(frozen=True)
class MatrixPlace:
    """The matrix directory a command works on, and what it was resolved from."""

    path: Path  # MATRIX as typed (relative: to the current directory, the repository root under make)
    results_dir: Path  # RESULTS_DIR of the .config and overrides, or the default when the .config is not used
    latest: bool  # True when MATRIX was not given: ``path`` is ``results_dir/latest``
    config: Config | None  # the .config with the overrides applied; None when it is missing or not valid


def resolve_matrix(
    config_path: str | os.PathLike, overrides: Iterable[str] = (), matrix: str | os.PathLike | None = None
) -> MatrixPlace:
    """The one answer to "which matrix?" for every command: ``matrix`` (``MATRIX=``) when given, else
    ``RESULTS_DIR/latest`` with ``RESULTS_DIR`` from the .config at ``config_path`` and ``overrides``
    (``SET=``). A .config that is missing or not valid is not needed to find results: RESULTS_DIR then comes
    from the Kconfig defaults and the overrides (with a note when the .config is not valid). A bad override is
    an error (one line), as in ``make run``. Nothing is checked on disk: each command says in its own words
    what it needs there."""
    from lib import config as config_mod

    overrides = list(overrides)
    defaults = config_mod.from_defaults(overrides)  # first: a bad override is its own error, not a note
    path = Path(config_path)
    cfg = None
    if path.is_file():
        try:
            cfg = config_mod.load(path, overrides)
        except UserError as e:
            log.warning("note: %s is not used (%s); RESULTS_DIR is the default unless SET= names one", path, e)
    base = results_dir(cfg if cfg is not None else defaults)
    if matrix:
        return MatrixPlace(Path(matrix), base, False, cfg)
    return MatrixPlace(base / LATEST, base, True, cfg)


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    """Everything a plot or report needs about one run, read from its directory (and the ledger) only.

    The accessors below are the one reading of a run's files: its state, its metric, its final and best
    values, its target sparsity, why it failed."""

    path: Path
    config: dict
    status: dict
    summary: dict | None
    metrics: list[dict] = field(default_factory=list)
    ledger_state: str | None = None  # the runner's record, for a run the ledger lists

    @property
    def run_id(self) -> str:
        return self.config["run_id"]

    @property
    def axes(self) -> dict:
        return self.config["axes"]

    @property
    def values(self) -> dict:
        """The run's resolved Kconfig values."""
        return self.config.get("values") or {}

    @property
    def state(self) -> str:
        """The ledger's state of a run it lists (the runner's record). A run directory the ledger does not
        list: a summary (written once, at the end) outranks a status left by a killed process."""
        if self.ledger_state is not None:
            return self.ledger_state
        if self.summary and self.summary.get("status") in ("done", "failed"):
            return self.summary["status"]
        return self.status.get("state", "pending")

    @property
    def reason(self) -> str:
        """Why the run failed, on one line."""
        reason = (self.summary or {}).get("reason") or self.status.get("reason") or "no reason recorded"
        return " ".join(str(reason).split())

    @property
    def metric(self) -> str | None:
        """The eval metric its summary names (None before the summary is written)."""
        return (self.summary or {}).get("metric") or None

    def final(self, metric: str | None = None) -> float | None:
        """The final value of ``metric`` (default: the summary's metric)."""
        value = ((self.summary or {}).get("final") or {}).get(metric or self.metric)
        return None if value is None else float(value)

    def best(self, metric: str | None = None) -> tuple[float | None, int | None]:
        """The best value of ``metric`` (default: the summary's metric) and the step it was reached at."""
        best = (self.summary or {}).get("best") or {}
        value = best.get(metric or self.metric)
        return (None if value is None else float(value)), best.get("step")

    @property
    def target_sparsity(self) -> float | None:
        """The target sparsity it was pruned to: 0 for a dense run, None when neither axes nor summary say."""
        if self.axes.get("pruning") == DENSE:
            return 0.0
        value = self.axes.get("target_sparsity", (self.summary or {}).get("target_sparsity"))
        return None if value is None else float(value)

    @property
    def oneshot(self) -> list[dict]:
        """The one-shot pruning results of this run (``<run>/oneshot/*/prune.json``): :func:`oneshot_results`."""
        return oneshot_results(self.path / ONESHOT_DIR)

    def series(self, split: str, key: str) -> tuple[list[int], list[float]]:
        """Steps and values of ``key`` over the rows of ``split`` that have it."""
        rows = [r for r in self.metrics if r.get("split") == split and key in r]
        return [r["step"] for r in rows], [r[key] for r in rows]


def oneshot_results(root: Path) -> list[dict]:
    """The one-shot pruning results in ``root`` (``<root>/<method>-<target>/prune.json``, by directory name),
    each with its directory's name as ``name``."""
    found = sorted(root.glob(f"*/{PRUNE_JSON}")) if root.is_dir() else []
    return [{**summary, "name": p.parent.name} for p in found if (summary := read_json(p)) is not None]


def model_oneshot(results_dir: Path) -> dict[str, list[dict]]:
    """The one-shot results of models that are not runs of ours (``make prune`` on a Hugging Face model:
    ``RESULTS_DIR/oneshot/<model>/<method>-<target>/``), by the model's directory name."""
    root = results_dir / ONESHOT_DIR
    models = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    return {d.name: found for d in models if (found := oneshot_results(d))}


def load_run(path: str | os.PathLike) -> Run:
    path = Path(path)
    return Run(
        path=path,
        config=read_json(path / CONFIG),
        status=read_json(path / STATUS, {"state": "pending"}),
        summary=read_json(path / SUMMARY),
        metrics=read_jsonl(path / METRICS),
    )


def load_runs(matrix_dir: str | os.PathLike) -> list[Run]:
    """Every run directory of a matrix (a subdirectory with a ``config.json``), sorted by run id."""
    matrix_dir = Path(matrix_dir)
    runs = [load_run(p) for p in sorted(matrix_dir.iterdir()) if (p / CONFIG).is_file()]
    return sorted(runs, key=lambda r: r.run_id)


def load_matrix(matrix_dir: Path) -> list[Run]:
    """The ledger's runs (with its state, and whatever their directories hold so far: nothing before a run has
    started) and any run directory it does not list, sorted by run id. A matrix without a readable ledger is
    read from its run directories alone."""
    dirs = {run.run_id: run for run in load_runs(matrix_dir)}
    try:
        entries = (read_json(matrix_dir / LEDGER) or {}).get("runs", [])
        listed = [(e["run_id"], e["config"], e["state"]) for e in entries]
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        log.warning("ignoring %s (%s: %s); reading the run directories only", matrix_dir / LEDGER, type(e).__name__, e)
        listed = []
    runs: list[Run] = []
    for run_id, config, state in listed:
        run = dirs.pop(run_id, None) or Run(matrix_dir / run_id, config, {}, None)
        run.ledger_state = state
        runs.append(run)
    return sorted(runs + list(dirs.values()), key=lambda r: r.run_id)


def outcome(run_dir: Path, returncode: int) -> tuple[str, str | None]:
    """The state a run's process left it in (done, interrupted or failed) and why, from its exit status and
    its ``status.json``: what the runner records in the ledger."""
    status = read_json(run_dir / STATUS, {})
    if returncode == 0 and status.get("state") == "done":
        return "done", None
    # Stopped by a signal at a step boundary, resumable. Exit status 130, or 1 from torchrun when its workers
    # stopped; a process killed outright (negative status) did not get to checkpoint and counts as failed.
    if returncode > 0 and status.get("state") == "interrupted":
        return "interrupted", f"stopped at step {status.get('step', 0)} by a signal; `make continue` resumes it"
    if returncode < 0:
        reason = f"killed by signal {signal.Signals(-returncode).name}"
        if -returncode == signal.SIGKILL:
            reason += " (out of memory?)"
        return "failed", reason
    return "failed", status.get("reason") or f"exit status {returncode}; see {run_dir / LOG}"
