"""Stopping a matrix on purpose and meeting damage, as a batch system or an unlucky user does:

- SIGTERM to the runner (``scancel``) and SIGUSR1 to a training process (a scheduler's "time is nearly up")
  each end with a checkpoint at the next step boundary and the run recorded as interrupted, not failed;
- a damaged newest checkpoint is passed over for the one kept before it;
- and after all of that ``make continue`` ends bit-identical to a run that was never disturbed.

Determinism: the training process is frozen (SIGSTOP) while a signal is sent and released (SIGCONT) once the
signal is on its way, so where it stops never depends on how fast this machine is.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib import checkpoint, results
from tests.helpers import (
    HANG_GUARD_SECONDS,
    ROOT,
    assert_same_run,
    make_cmd,
    make_env,
    make_run,
    processes_mentioning,
    runner,
    write_config,
)

pytestmark = pytest.mark.slow

RUN_ID = "lenet5-adamw-magnitude-s0.7-seed0"
STEPS_PER_EPOCH = 45  # 1437 training digits / batch 32, rounded up
SETTINGS = (
    "OPTIMIZER_SGD=n",
    "PRUNING_NONE=n",
    "TARGET_SPARSITIES=0.7",
    "EPOCHS=20",
    "CHECKPOINT_INTERVAL=1000",  # never mid-period: a mid-period checkpoint can only come from a stop
    "LOG_INTERVAL=5",
    "MATRIX_NAME=stop",
)


def _wait(condition, what: str):
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)
    return value


def _training_pid(run_dir: Path) -> int | None:
    pids = processes_mentioning(run_dir)
    return pids[0] if len(pids) == 1 else None


def _running(run_dir: Path) -> int | None:
    """The training process, once its loop has started (status "running": its stop handler is installed)."""
    status = results.read_json(run_dir / results.STATUS, {})
    return _training_pid(run_dir) if status.get("state") == "running" else None


def _ledger_state(matrix: Path) -> str:
    (entry,) = results.read_json(matrix / results.LEDGER)["runs"]
    return entry["state"]


def _stderr_until(proc: subprocess.Popen, text: str) -> str:
    seen = ""
    while text not in seen:
        line = proc.stderr.readline()
        assert line, f"{text!r} never came; stderr was:\n{seen}"
        seen += line
    return seen


def _modes(root: Path) -> set[tuple[str, int]]:
    return {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)) for p in root.rglob("*")}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds training processes through /proc")
def test_stop_signals_and_a_damaged_checkpoint_resume_bit_identical(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    cfg_ref = write_config(tmp_path / "ref.config", reference, *SETTINGS)
    done = runner("run", "--config", str(cfg_ref), umask=0o022, timeout=HANG_GUARD_SECONDS)
    assert done.returncode == 0, done.stderr
    graphs = subprocess.run(
        [sys.executable, "-m", "scripts.update_graphs", "--matrix", str(reference / "stop")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        umask=0o022,
        timeout=HANG_GUARD_SECONDS,
    )
    assert graphs.returncode == 0, graphs.stderr
    # Results, graphs and report are made with the user's umask (here 022): colleagues can read them.
    assert _modes(reference) == {("dir", 0o755), ("file", 0o644)}

    cfg = write_config(tmp_path / "stop.config", tmp_path / "stopped", *SETTINGS)
    matrix = tmp_path / "stopped" / "stop"
    run = matrix / RUN_ID

    # 1. SIGTERM to the runner: it forwards the stop, the run checkpoints at its next step and is interrupted.
    make = subprocess.Popen(make_cmd("run", f"KCONFIG_CONFIG={cfg}"), env=make_env(), stderr=subprocess.PIPE, text=True)
    child = _wait(lambda: _running(run), "the training loop to start")
    os.kill(child, signal.SIGSTOP)
    os.kill(json.loads((matrix / "matrix.lock").read_text())["pid"], signal.SIGTERM)
    _stderr_until(make, "stopping 1 run(s) at their next step boundary")
    os.kill(child, signal.SIGCONT)
    stderr = make.communicate(timeout=HANG_GUARD_SECONDS)[1]
    assert make.returncode != 0
    assert "interrupted: `make continue` resumes the matrix where it stopped" in stderr
    assert "Traceback" not in stderr
    assert _ledger_state(matrix) == "interrupted"
    first = checkpoint.load(run / results.CHECKPOINT)["state"]
    # At the next step boundary: mid-period (only a stop writes a checkpoint there), or, when that step ended
    # a period, the period's own checkpoint.
    where = "mid-period" if first["batch"] else "at the period's end"
    assert first["step"] == first["epoch"] * STEPS_PER_EPOCH + first["batch"]
    assert f"SIGINT: checkpoint saved {where} at step {first['step']};" in (run / results.LOG).read_text()
    summary = results.read_json(run / results.SUMMARY)
    assert summary is None, "an interrupted run is not a failed one"

    # 2. `make continue` with a .config that no longer matches says the ledger wins; then SIGUSR1 straight to
    #    the training process: the runner records the run as stopped, not failed.
    changed = write_config(tmp_path / "changed.config", tmp_path / "stopped", *SETTINGS, "EPOCHS=21")
    make = subprocess.Popen(
        make_cmd("continue", f"KCONFIG_CONFIG={changed}"), env=make_env(), stderr=subprocess.PIPE, text=True
    )
    child = _wait(lambda: _running(run), "the resumed training loop to start")
    os.kill(child, signal.SIGSTOP)
    os.kill(child, signal.SIGUSR1)
    os.kill(child, signal.SIGCONT)
    stderr = make.communicate(timeout=HANG_GUARD_SECONDS)[1]
    assert make.returncode != 0
    assert (
        f"note: {changed} differs from the ledger of {matrix} (1 run(s) changed); the ledger wins: "
        "`make continue` finishes the matrix as it was recorded (run `make` to run .config's matrix)"
    ) in stderr
    assert f"STOPPED {RUN_ID}: stopped at step" in stderr
    assert "1 run(s) were stopped by a signal; `make continue` resumes them" in stderr
    assert _ledger_state(matrix) == "interrupted"
    second = checkpoint.load(run / results.CHECKPOINT)["state"]
    assert second["step"] > first["step"]
    where = "mid-period" if second["batch"] else "at the period's end"
    assert f"SIGUSR1: checkpoint saved {where} at step {second['step']};" in (run / results.LOG).read_text()

    # 3. The newest checkpoint is damaged: resume passes it over for the one kept before it.
    data = (run / results.CHECKPOINT).read_bytes()
    (run / results.CHECKPOINT).write_bytes(data[: len(data) // 2])
    final = make_run("continue", f"MATRIX={matrix}")
    assert final.returncode == 0, final.stderr
    assert _ledger_state(matrix) == "done"
    log = (run / results.LOG).read_text()
    assert f"{run / results.CHECKPOINT} is damaged (" in log
    assert f"resuming from {run / 'checkpoint.prev.pt'} instead" in log

    assert_same_run(reference / "stop" / RUN_ID, run)
