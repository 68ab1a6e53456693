"""Kill `make` with SIGKILL mid-matrix, several times, then `make continue`: every run is done exactly once and
ends bit-identical (weights, masks, optimizer state, metrics) to a matrix that was never interrupted."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lib import results
from tests.helpers import (
    HANG_GUARD_SECONDS,
    assert_same_run,
    make_cmd,
    make_env,
    make_run,
    processes_mentioning,
    runner,
    write_config,
)

pytestmark = pytest.mark.slow

# Two runs, 3 epochs x 45 steps, a checkpoint every 10 steps: kills land mid-epoch, between checkpoints, in
# evaluation, between runs.
SETTINGS = (
    "OPTIMIZER_SGD=n",
    "TARGET_SPARSITIES=0.7",
    "EPOCHS=3",
    "CHECKPOINT_INTERVAL=10",
    "LOG_INTERVAL=5",
    "MATRIX_NAME=resume",
)
RUNS = ("lenet5-adamw-none-seed0", "lenet5-adamw-magnitude-s0.7-seed0")  # in the order JOBS=1 trains them
ROWS_PER_RUN = 3 * 45 // 5 + 3  # train rows every LOG_INTERVAL steps, one eval row per epoch
# A SIGKILLed parent's children get their death signal at once; this is only how long to look for stragglers.
ORPHAN_GRACE_SECONDS = 60


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _state(matrix: Path) -> dict:
    ledger = results.read_json(matrix / "matrix.json") or {"runs": []}
    return {r["run_id"]: r["state"] for r in ledger["runs"]}


def _rows(run_dir: Path) -> int:
    return len(results.read_jsonl(run_dir / "metrics.jsonl"))


def _kill_make(args: list[str], matrix: Path, when, required: bool = True) -> None:
    """Start `make ARGS`, wait until ``when()`` holds, SIGKILL make alone; then nothing it started may survive:
    not in its process group, and nowhere else on the machine (no process naming the matrix). With
    ``required=False`` make may also finish first (the kill point was a random moment)."""
    proc = subprocess.Popen(
        make_cmd(*args), env=make_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while not when() and proc.poll() is None:
        assert time.monotonic() < deadline, "gave up waiting for the moment to kill"
        time.sleep(0.005)
    if proc.poll() is not None:
        assert not required, f"make ended before the kill: {proc.stderr.read().decode()}"
        return
    proc.kill()  # SIGKILL to make alone: the runner and the training process must die with it
    proc.wait()
    deadline = time.monotonic() + ORPHAN_GRACE_SECONDS
    while (_group_alive(proc.pid) or processes_mentioning(matrix)) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphans = processes_mentioning(matrix)
    alive = _group_alive(proc.pid)
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not alive and not orphans, "processes outlived a SIGKILLed make (orphaned runner or training process)"


def _after(seconds: float):
    start = time.monotonic()
    return lambda: time.monotonic() - start >= seconds


def test_sigkill_make_then_continue_is_bit_identical(tmp_path: Path):
    reference = tmp_path / "reference"
    cfg_ref = write_config(tmp_path / "ref.config", reference, *SETTINGS)
    proc = runner("run", "--config", str(cfg_ref))
    assert proc.returncode == 0, proc.stderr

    interrupted = tmp_path / "interrupted"
    cfg = write_config(tmp_path / "int.config", interrupted, *SETTINGS)
    matrix = interrupted / "resume"
    first, second = (matrix / run_id for run_id in RUNS)
    rng = random.Random(1234)
    run = ["run", f"KCONFIG_CONFIG={cfg}"]
    # Kill points that do not depend on this machine's speed: in make's first second (before or while the
    # runner starts: it must not be orphaned), then once each run has logged a random number of rows (mid-epoch,
    # between checkpoints, in evaluation), then at a random moment of a resume.
    _kill_make(run, matrix, _after(rng.uniform(0.0, 1.0)))
    rows = rng.randrange(1, ROWS_PER_RUN)
    _kill_make(run, matrix, lambda: _rows(first) >= rows)
    rows = rng.randrange(1, ROWS_PER_RUN)
    _kill_make(["continue", f"MATRIX={matrix}"], matrix, lambda: _rows(second) >= rows)
    assert _state(matrix)[RUNS[1]] != "done"
    delay = rng.uniform(0.0, 1.5)
    since: list[float] = []  # when the resumed training process of the second run appeared

    def resuming() -> bool:
        if not since and processes_mentioning(second):
            since.append(time.monotonic())
        return bool(since) and time.monotonic() - since[0] >= delay

    _kill_make(["continue", f"MATRIX={matrix}"], matrix, resuming, required=False)

    final = make_run("continue", f"MATRIX={matrix}")
    assert final.returncode == 0, final.stderr
    assert set(_state(matrix).values()) == {"done"}
    for run_id in RUNS:
        assert_same_run(reference / "resume" / run_id, matrix / run_id)


def test_second_make_on_the_same_matrix_refuses(tmp_path: Path):
    cfg = write_config(tmp_path / ".config", tmp_path / "results", *SETTINGS)
    matrix = tmp_path / "results" / "resume"
    first = subprocess.Popen(
        make_cmd("run", f"KCONFIG_CONFIG={cfg}"),
        env=make_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + HANG_GUARD_SECONDS
        while not (matrix / "matrix.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        ledger = (matrix / "matrix.json").read_text()
        second = subprocess.run(
            make_cmd("run", f"KCONFIG_CONFIG={cfg}"),
            env=make_env(),
            capture_output=True,
            text=True,
            timeout=HANG_GUARD_SECONDS,
        )
        assert second.returncode != 0
        assert f"{matrix} is in use by another `make` (pid" in second.stderr
        assert "Traceback" not in second.stderr
        json.loads(ledger)  # the ledger the first one wrote is intact
    finally:
        first.kill()
        first.wait()
        time.sleep(0.5)
        if _group_alive(first.pid):
            os.killpg(first.pid, signal.SIGKILL)
