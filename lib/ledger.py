"""A matrix's ledger and its lock: ``<matrix>/matrix.json`` lists every run with its full resolved config and its
state (pending, running, submitted, done, failed, interrupted); only the process holding ``<matrix>/matrix.lock``
writes it, atomically after every change.

The lock is safe on NFS, where matrices live on a cluster: it is taken by ``link(2)``, atomic there as on a local
disk (the lock file either becomes ours or already is someone else's), never by ``flock``, whose semantics NFS
does not keep. The lock file names its holder (host, pid, the pid's start time, a token). A holder that dies
leaves it behind, so it is judged: on the same host, by whether that process still exists (the start time guards
against a reused pid); from another host, by its heartbeat (the holder touches the file every
:data:`HEARTBEAT_SECONDS`; one untouched for :data:`STALE_SECONDS` is stale). A stale lock is broken by renaming
it away (atomic: of two breakers one wins) and checking that what was renamed was the stale one.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from lib import process, results
from lib.errors import UserError
from lib.spec import RunSpec

logger = logging.getLogger("runner")

LOCK = "matrix.lock"
HEARTBEAT_SECONDS = 30.0
# A lock held from another host is stale when its heartbeat is this old: generous, against clock skew between
# the hosts and an NFS server's attribute cache.
STALE_SECONDS = 300.0


def _start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, ``/proc/<pid>/stat`` field 22); None where unreadable."""
    fields = process.proc_stat(pid)
    return None if fields is None else fields[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


@dataclass(frozen=True)
class Holder:
    """Who holds a matrix's lock, as its lock file says."""

    host: str
    pid: int
    start: str | None
    token: str
    since: float

    @classmethod
    def me(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), _start_time(os.getpid()), uuid.uuid4().hex, time.time())

    @classmethod
    def read(cls, path: Path) -> tuple[Holder, float] | None:
        """The holder named in ``path`` and the file's modification time (its heartbeat); None when there is
        no lock file. A file that cannot be parsed (a holder killed while writing cannot leave one: it is
        written before it is linked into place) is judged by its heartbeat alone."""
        try:
            text, mtime = path.read_text(), path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            d = json.loads(text)
            return cls(str(d["host"]), int(d["pid"]), d.get("start"), str(d["token"]), float(d["since"])), mtime
        except (ValueError, KeyError, TypeError):
            return cls("?", 0, None, "", mtime), mtime

    def alive(self, heartbeat: float, now: float) -> bool:
        if self.host == socket.gethostname():
            if not _pid_alive(self.pid):
                return False
            return self.start is None or _start_time(self.pid) in (None, self.start)
        return now - heartbeat < STALE_SECONDS

    def __str__(self) -> str:
        return f"pid {self.pid}" if self.host == socket.gethostname() else f"pid {self.pid} on {self.host}"


class MatrixLock:
    """The exclusive lock of a matrix, taken without waiting: a second ``make`` on the matrix refuses at once."""

    def __init__(self, matrix_dir: Path) -> None:
        self.path = matrix_dir / LOCK
        self.me: Holder | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> MatrixLock:
        me = Holder.me()
        for _ in range(3):
            if _link_create(self.path, json.dumps(asdict(me))):
                self.me = me
                break
            found = Holder.read(self.path)
            if found is None:  # released between our attempt and our look: try again
                continue
            holder, heartbeat = found
            if holder.alive(heartbeat, time.time()):
                raise UserError(
                    f"{self.path.parent} is in use by another `make` ({holder}); wait for it to finish "
                    "or stop it, then `make continue`"
                )
            _break(self.path, holder)
        else:
            raise UserError(f"could not take the lock {self.path}: others keep taking it; try again")
        self._beat = threading.Thread(target=self._heartbeat, name="matrix-lock-heartbeat", daemon=True)
        self._beat.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self.path)
            except OSError as e:
                logger.error("cannot refresh the lock %s (%s); another host may think it stale", self.path, e)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        found = Holder.read(self.path)
        if found is not None and self.me is not None and found[0].token == self.me.token:
            self.path.unlink(missing_ok=True)

    @staticmethod
    def holder(matrix_dir: Path) -> Holder | None:
        """Who is working on the matrix, or None when no live process is: reads the lock file, creates and
        writes nothing (``make status`` on a matrix it may not write)."""
        found = Holder.read(matrix_dir / LOCK)
        if found is None:
            return None
        holder, heartbeat = found
        return holder if holder.alive(heartbeat, time.time()) else None


def _link_create(path: Path, content: str) -> bool:
    """Create ``path`` holding ``content`` if it does not exist, atomically also on NFS: the content goes to a
    file of our own (fsynced), which is then hard-linked to ``path``; ``link`` fails if ``path`` exists.
    Where NFS loses the reply of a ``link`` that succeeded, the link count of our file says it did."""
    own = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    with open(own, "w") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    try:
        return _link(own, path)
    except OSError:
        return os.stat(own).st_nlink == 2
    finally:
        own.unlink(missing_ok=True)


def _break(path: Path, stale: Holder) -> None:
    """Remove the stale lock of ``stale``: rename it away, then make sure it was that one we renamed (a live
    holder may have taken the lock in between); if not, put it back."""
    aside = path.with_name(f"{path.name}.stale.{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another process broke it first
        return
    found = Holder.read(aside)
    if found is not None and found[0].token != stale.token:
        if not _link(aside, path):
            logger.error("lock %s: renamed a live holder's lock aside and could not restore it", path)
    else:
        logger.warning("note: broke the stale lock of %s (%s), left by a process that is gone", path.parent, stale)
    aside.unlink(missing_ok=True)


def _link(source: Path, path: Path) -> bool:
    """Hard-link ``source`` to ``path``; False where ``path`` exists (other errors raise)."""
    try:
        os.link(source, path)
        return True
    except FileExistsError:
        return False


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
        self._saved = json.dumps(self.data["runs"], sort_keys=True) if self.path.exists() else None

    def save(self) -> None:
        """Write the ledger if a run was added or changed since it was read or last written."""
        runs = list(self.runs.values())
        text = json.dumps(runs, sort_keys=True)
        if text == self._saved:
            return
        self.data["runs"] = runs
        self.data["updated"] = time.time()
        results.atomic_write_json(self.path, self.data)
        self._saved = text

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
