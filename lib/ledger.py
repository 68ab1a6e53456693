"""A matrix's ledger and its lock: ``<matrix>/matrix.json`` lists every run with its full resolved config and its
state (pending, running, done, failed, interrupted); only the process holding ``<matrix>/.lock`` (an ``flock``,
dropped by the kernel if that process dies) writes it, atomically after every change."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from lib import results
from lib.errors import UserError
from lib.spec import RunSpec


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

    @staticmethod
    def holder(matrix_dir: Path) -> str | None:
        """The pid (as the holder wrote it) of the process working on the matrix, or None when none is: a
        shared ``flock`` tried without waiting and dropped at once, on a read-only descriptor, so it creates and
        writes nothing (``make status`` on a matrix it may not write). A ``make`` that starts in that very
        instant would find the matrix in use and say so."""
        try:
            fd = os.open(matrix_dir / ".lock", os.O_RDONLY)
        except OSError:  # no lock file: nothing ever ran here; unreadable: nothing to tell
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


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
