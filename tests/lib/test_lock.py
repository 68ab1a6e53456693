"""The matrix lock, safe on NFS: taken by link(2), judged by pid and start time on this host and by heartbeat
from another, broken when stale, refused at once when live."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lib import ledger as ledger_mod
from lib.errors import UserError
from lib.ledger import LOCK, MatrixLock

ROOT = Path(__file__).resolve().parents[2]


def _write_lock(matrix: Path, **fields) -> Path:
    holder = {"host": "elsewhere", "pid": 1, "start": None, "token": "x", "since": 0.0, **fields}
    (matrix / LOCK).write_text(json.dumps(holder))
    return matrix / LOCK


def test_a_second_make_is_refused_at_once(tmp_path: Path) -> None:
    with MatrixLock(tmp_path):
        with pytest.raises(UserError) as e:
            MatrixLock(tmp_path).__enter__()
        assert str(e.value) == (
            f"{tmp_path} is in use by another `make` (pid {os.getpid()}); wait for it to finish or stop it, "
            "then `make continue`"
        )
    assert list(tmp_path.iterdir()) == []


def test_a_killed_holder_on_this_host_leaves_a_lock_that_is_broken(tmp_path: Path) -> None:
    code = (
        "import pathlib, sys, time; from lib.ledger import MatrixLock; "
        "MatrixLock(pathlib.Path(sys.argv[1])).__enter__(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    assert str(MatrixLock.holder(tmp_path)) == f"pid {holder.pid}"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (tmp_path / LOCK).exists() and MatrixLock.holder(tmp_path) is None  # left behind, and known dead
    with MatrixLock(tmp_path) as lock:
        assert json.loads((tmp_path / LOCK).read_text())["token"] == lock.me.token


def test_a_reused_pid_is_not_mistaken_for_the_holder(tmp_path: Path) -> None:
    import socket

    _write_lock(tmp_path, host=socket.gethostname(), pid=os.getpid(), start="not-our-start-time")
    assert MatrixLock.holder(tmp_path) is None
    with MatrixLock(tmp_path):
        pass


def test_another_hosts_lock_counts_while_its_heartbeat_is_fresh(tmp_path: Path) -> None:
    lock = _write_lock(tmp_path, pid=4242)
    assert str(MatrixLock.holder(tmp_path)) == "pid 4242 on elsewhere"
    with pytest.raises(UserError, match=r"in use by another `make` \(pid 4242 on elsewhere\)"):
        MatrixLock(tmp_path).__enter__()
    old = time.time() - ledger_mod.STALE_SECONDS - 1
    os.utime(lock, (old, old))
    assert MatrixLock.holder(tmp_path) is None
    with MatrixLock(tmp_path):
        assert json.loads(lock.read_text())["host"] != "elsewhere"


def test_the_holder_keeps_its_heartbeat(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ledger_mod, "HEARTBEAT_SECONDS", 0.05)
    with MatrixLock(tmp_path):
        old = time.time() - 1000
        os.utime(tmp_path / LOCK, (old, old))
        time.sleep(0.3)
        assert time.time() - (tmp_path / LOCK).stat().st_mtime < 5


def test_of_many_takers_exactly_one_wins(tmp_path: Path) -> None:
    barrier, won = threading.Barrier(8), []

    def take() -> None:
        barrier.wait()
        won.append(ledger_mod._link_create(tmp_path / LOCK, "{}"))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False] * 7 + [True]
    assert [p.name for p in tmp_path.iterdir()] == [LOCK]  # no private files left


def test_a_lock_taken_again_while_being_broken_is_put_back(tmp_path: Path) -> None:
    """A breaker that judged a lock stale, but finds a live holder's lock in its place when it renames it,
    restores that lock."""
    _write_lock(tmp_path, token="live")
    ledger_mod._break(tmp_path / LOCK, ledger_mod.Holder("elsewhere", 1, None, "stale-one", 0.0))
    assert json.loads((tmp_path / LOCK).read_text())["token"] == "live"
    assert [p.name for p in tmp_path.iterdir()] == [LOCK]
