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
"""

from __future__ import annotations

import errno
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.errors import UserError

CONFIG = "config.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"
BEST_CHECKPOINT = "best.pt"
LOG = "log.txt"
ENV = "env.json"
LEDGER = "matrix.json"
GRAPHS = "graphs"
REPORT = "report.md"
SAMPLE = "sample.json"  # the report's text sample of a GPT-2 run, with what it was generated from


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


def append_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Append rows and fsync. Appends are not atomic; readers drop a torn tail and resume truncates."""
    with open(path, "a") as f:
        f.write(_jsonl(rows))
        f.flush()
        os.fsync(f.fileno())


@dataclass
class Run:
    """Everything a plot or report needs about one run, read from its directory only."""

    path: Path
    config: dict
    status: dict
    summary: dict | None
    metrics: list[dict] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.config["run_id"]

    @property
    def axes(self) -> dict:
        return self.config["axes"]

    def series(self, split: str, key: str) -> tuple[list[int], list[float]]:
        """Steps and values of ``key`` over the rows of ``split`` that have it."""
        rows = [r for r in self.metrics if r.get("split") == split and key in r]
        return [r["step"] for r in rows], [r[key] for r in rows]


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
