"""Process helpers: the parent check that closes the early-kill race, stop signals as a flag, usable CPUs."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from lib import process
from lib.config import ROOT

HANG_GUARD_SECONDS = 600  # only against a hang: the outcome never depends on how fast this machine is
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")


def _python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


@linux
def test_a_process_whose_starter_is_gone_exits_at_once() -> None:
    # The pid named as the starter is not our parent: the parent that started us is gone (we were re-parented).
    result = _python("from lib.process import die_with_parent\ndie_with_parent(1)\nprint('still here')")
    assert result.returncode == -signal.SIGKILL
    assert "still here" not in result.stdout


@linux
def test_the_starter_is_read_from_the_environment() -> None:
    code = "from lib.process import die_with_parent\ndie_with_parent()\nprint('still here')"
    gone = _python(code, env={process.PARENT_ENV: "1"})
    assert gone.returncode == -signal.SIGKILL and gone.stdout == ""
    alive = _python(code, env={process.PARENT_ENV: str(os.getpid())})
    assert alive.returncode == 0 and alive.stdout == "still here\n"


@linux
def test_a_child_dies_when_its_parent_is_killed(tmp_path) -> None:
    """A middle process starts a child tied to it, then is SIGKILLed: the child goes too (no orphan)."""
    ready = tmp_path / "child.pid"
    child_code = (
        "import os; from lib.process import die_with_parent; die_with_parent(); "
        f"open({str(ready)!r}, 'w').write(str(os.getpid())); import time; time.sleep(600)"
    )
    middle_code = (
        "import subprocess, sys, time; from lib.process import child_env; "
        f"subprocess.Popen([sys.executable, '-c', {child_code!r}], env=child_env()); time.sleep(600)"
    )
    middle = subprocess.Popen([sys.executable, "-c", middle_code], cwd=ROOT)
    try:
        deadline = time.monotonic() + HANG_GUARD_SECONDS
        while not ready.exists() or not ready.read_text():
            assert middle.poll() is None and time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        child = int(ready.read_text())
        middle.kill()
        middle.wait()
        while _alive(child):
            assert time.monotonic() < deadline, "the child outlived its killed parent"
            time.sleep(0.05)
    finally:
        middle.kill()


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_cgroup_quota_parsing() -> None:
    assert process.parse_cgroup_quota("max 100000\n") == math.inf
    assert process.parse_cgroup_quota("150000 100000\n") == 1.5
    assert process.parse_cgroup_quota("200000 100000") == 2.0
    assert process.parse_cgroup_quota(None, "-1\n", "100000\n") == math.inf
    assert process.parse_cgroup_quota(None, "50000\n", "100000\n") == 0.5
    assert process.parse_cgroup_quota(None, None, None) == math.inf


def test_usable_cpus_follow_the_affinity_mask() -> None:
    assert 1 <= process.usable_cpus() <= len(os.sched_getaffinity(0))
    if len(os.sched_getaffinity(0)) > 1:
        result = _python(
            "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
            "from lib.process import usable_cpus; print(usable_cpus())"
        )
        assert result.stdout == "1\n", result.stderr


def test_usable_cpus_capped_by_the_quota(monkeypatch) -> None:
    files = {"/sys/fs/cgroup/cpu.max": "100000 100000\n"}
    monkeypatch.setattr(process, "_read", files.get)
    assert process.usable_cpus() == 1
    files["/sys/fs/cgroup/cpu.max"] = "max 100000\n"
    assert process.usable_cpus() == len(os.sched_getaffinity(0))


def test_stop_signals_set_a_flag_once() -> None:
    saved = {sig: signal.getsignal(sig) for sig in process.STOP_SIGNALS}
    try:
        stop = process.StopRequest().install()
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGUSR1)  # a second copy of the stop changes nothing, and raises nothing
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.name == "SIGTERM"
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
