"""Failures a user (or someone handing them files) can cause: each is one `error:` line with the fix, a non-zero
exit, and nothing else in the matrix is touched.

- a planted checkpoint that would run a command when loaded (refused; the command never runs);
- results that cannot be written: RESULTS_DIR under a file, a matrix directory that refuses new files
  (read-only mount, no permission: made here with ``chattr +i`` as root or ``chmod`` otherwise).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from lib import results
from tests.helpers import HANG_GUARD_SECONDS, Planted, make_run, runner, write_config

pytestmark = pytest.mark.slow

SETTINGS = ("OPTIMIZER_SGD=n", "TARGET_SPARSITIES=0.7", "EPOCHS=1", "MATRIX_NAME=small")
RUNS = ("lenet5-adamw-magnitude-s0.7-seed0", "lenet5-adamw-none-seed0")


def _errors(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A real, finished two-run matrix (one epoch each); tests work on copies of it."""
    base = tmp_path_factory.mktemp("finished")
    cfg = write_config(base / ".config", base / "results", *SETTINGS)
    done = runner("run", "--config", str(cfg), timeout=HANG_GUARD_SECONDS)
    assert done.returncode == 0, done.stderr
    return base / "results" / "small"


@pytest.fixture
def matrix(finished: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "results" / "small"
    shutil.copytree(finished, copy, symlinks=True)
    return copy


def test_a_planted_checkpoint_is_refused_on_continue(matrix: Path, tmp_path: Path) -> None:
    victim, bystander = (matrix / run_id for run_id in RUNS)
    marker = tmp_path / "ran"
    torch.save({"model": {}, "rng": Planted(marker)}, victim / results.CHECKPOINT)
    ledger = results.read_json(matrix / results.LEDGER)
    for entry in ledger["runs"]:  # as a killed matrix leaves it: this run was in flight
        if entry["run_id"] == RUNS[0]:
            entry["state"] = "running"
    results.atomic_write_json(matrix / results.LEDGER, ledger)
    before = _snapshot(bystander)

    proc = make_run("continue", f"MATRIX={matrix}")
    assert proc.returncode != 0
    assert not marker.exists(), "the planted command ran"
    failed = [line for line in proc.stderr.splitlines() if line.startswith("FAILED")]
    assert failed == [
        f"FAILED  {RUNS[0]}: {victim / results.CHECKPOINT} asks to run posix.system when loaded; refused: "
        "checkpoints of this framework hold only tensors and plain values, so this file was not written by it or "
        f"was tampered with; delete it (`rm {victim / results.CHECKPOINT}`) unless you trust where it came from"
    ]
    assert _snapshot(bystander) == before, "a run that had nothing to do with it changed"
    states = {e["run_id"]: e["state"] for e in results.read_json(matrix / results.LEDGER)["runs"]}
    assert states == {RUNS[0]: "failed", RUNS[1]: "done"}


def test_results_dir_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    cfg = write_config(tmp_path / ".config", tmp_path / "afile" / "results", *SETTINGS)
    proc = make_run("run", f"KCONFIG_CONFIG={cfg}")
    assert proc.returncode != 0
    assert _errors(proc.stderr) == [
        f"error: RESULTS_DIR: cannot write in {tmp_path / 'afile' / 'results' / 'small'}: {tmp_path / 'afile'} is a "
        "file, not a directory; set RESULTS_DIR to a directory you can write (`make menuconfig`, or "
        '`make SET="RESULTS_DIR=<dir>"`)'
    ]
    assert (tmp_path / "afile").read_text() == ""


@pytest.fixture
def frozen(matrix: Path):
    """``matrix`` made to refuse new files, as a read-only mount or a colleague's directory would."""
    if os.geteuid() == 0:
        lock = subprocess.run(["chattr", "+i", str(matrix)], capture_output=True)
        if lock.returncode:
            pytest.skip(f"chattr +i is not available here ({lock.stderr.decode().strip()})")
        yield matrix
        subprocess.run(["chattr", "-i", str(matrix)], check=True)
    else:
        matrix.chmod(0o555)
        yield matrix
        matrix.chmod(0o755)


@pytest.mark.parametrize("target", ["continue", "update-graphs"])
def test_a_matrix_that_cannot_be_written_is_one_line(frozen: Path, target: str) -> None:
    before = _snapshot(frozen)
    proc = make_run(target, f"MATRIX={frozen}")
    assert proc.returncode != 0
    (line,) = _errors(proc.stderr)
    assert line.startswith(f"error: MATRIX: cannot write in {frozen}: ")
    assert line.endswith(f"make it writable, or copy the matrix somewhere writable and `make {target} MATRIX=<copy>`")
    assert _snapshot(frozen) == before
