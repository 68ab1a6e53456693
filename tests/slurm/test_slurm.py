"""The Slurm launcher against a real single-node Slurm (``make test-slurm``; skipped by ``make test``).

One story, as on a cluster: the quickstart matrix is submitted by a ``make`` that is killed right after sbatch
accepted the jobs, before its ledger recorded them; one job is requeued (``scontrol requeue``) while it trains;
``make continue`` meanwhile finds the jobs by name and submits nothing twice; at the end every run is done
exactly once, bit for bit as the same matrix trained locally.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib import results
from tests.helpers import HANG_GUARD_SECONDS, ROOT, assert_same_run, make_cmd, make_env, runner, write_config
from tests.slurm import cluster as cluster_mod

pytestmark = pytest.mark.skipif(
    os.environ.get("SPARSITY_LAB_SLURM") != "1", reason="needs a real Slurm: `make test-slurm` starts one"
)

MATRIX = "quickstart"
SLURM = ("LAUNCHER_SLURM=y", "SLURM_CPUS_PER_RUN=1", "SLURM_TIME_MINUTES=30")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        started = cluster_mod.start(tmp_path_factory.mktemp("slurm"))
    except cluster_mod.SlurmUnavailable as e:
        pytest.fail(f"cannot start the test's Slurm: {e}")
    yield started
    started.stop()


def _env(cluster) -> dict:
    return {**make_env(), **cluster.env()}


def _slurm(cluster, *args: str) -> str:
    out = subprocess.run(list(args), env=_env(cluster), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _ledger(matrix: Path) -> dict:
    return {e["run_id"]: e for e in json.loads((matrix / results.LEDGER).read_text())["runs"]}


def _queue(cluster) -> dict[str, str]:
    out = _slurm(cluster, "squeue", "--noheader", "--array", "--format=%i|%T")
    return dict(line.split("|") for line in out.split())


def _wait(what: str, check, timeout: float = 600.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# Run in a subprocess: a `make` whose ledger write after sbatch never happens (the process dies right there).
KILLED_AFTER_SBATCH = """
import os, sys
from lib import ledger, runner, slurm
save = ledger.Ledger.save
def save_or_die(self):
    if sys._getframe(1).f_code is slurm.submit.__code__:
        os._exit(9)  # sbatch has accepted the jobs; the ledger never hears of them
    save(self)
ledger.Ledger.save = save_or_die
sys.exit(runner.main(["run", "--config", sys.argv[1]]))
"""


def test_bad_partition_submits_nothing(cluster, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / ".config", tmp_path / "results", *SLURM, "SLURM_PARTITION=nope")
    proc = subprocess.run(
        make_cmd("run", f"KCONFIG_CONFIG={cfg}"), env=_env(cluster), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        "error: SLURM_PARTITION='nope': the cluster has no partition 'nope' (it has: debug); fix it in "
        '`make menuconfig` (Runtime > Slurm) or with SET="SYM=VALUE"; nothing was submitted'
    ]
    assert not (tmp_path / "results" / MATRIX / results.LEDGER).exists()
    assert _queue(cluster) == {}


def test_matrix_on_slurm_with_a_requeue_and_a_killed_submitter(cluster, tmp_path: Path) -> None:
    # The reference: the same matrix trained on this machine.
    local_cfg = write_config(tmp_path / "local.config", tmp_path / "local", "JOBS=2")
    proc = runner("run", "--config", str(local_cfg))
    assert proc.returncode == 0, proc.stderr
    reference = tmp_path / "local" / MATRIX

    cfg = write_config(tmp_path / ".config", tmp_path / "slurm", *SLURM)
    matrix = tmp_path / "slurm" / MATRIX
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_SBATCH, str(cfg)],
        cwd=ROOT,
        env=_env(cluster),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == 9, killed.stderr
    assert {e["state"] for e in _ledger(matrix).values()} == {"pending"}  # the jobs were never recorded
    notes = list((matrix / ".slurm" / "submissions").glob("*.json"))
    assert len(notes) == 1
    order = json.loads(notes[0].read_text())["runs"]
    assert len(order) == 6 and len(_queue(cluster)) == 6

    # Requeue the first run's job while it trains (and let it start again at once: a requeued job otherwise
    # waits for its BeginTime, about two minutes).
    first = matrix / order[0]
    _wait("the first run to train", lambda: results.read_json(first / results.STATUS, {}).get("step", 0) >= 100)
    job = json.loads((first / results.SLURM_JOB).read_text())["job"]
    _slurm(cluster, "scontrol", "requeue", job)
    _wait("the requeue", lambda: _queue(cluster).get(job) == "PENDING", timeout=120)
    _slurm(cluster, "scontrol", "update", f"JobId={job}", "StartTime=now")

    # `make continue` while the jobs live: it records the killed make's submission and submits nothing.
    cont = subprocess.run(
        make_cmd("continue", f"KCONFIG_CONFIG={cfg}"), env=_env(cluster), capture_output=True, text=True, timeout=300
    )
    assert cont.returncode == 0, cont.stderr
    assert "left by an interrupted `make`" in cont.stderr and "submitted " not in cont.stderr
    assert not list((matrix / ".slurm" / "submissions").glob("*.json"))
    recorded = _ledger(matrix)
    assert recorded[order[0]]["slurm"]["job"] == job
    assert {e["state"] for e in recorded.values()} <= {"submitted", "done"}
    status = subprocess.run(
        make_cmd("status", f"KCONFIG_CONFIG={cfg}"), env=_env(cluster), capture_output=True, text=True, timeout=300
    )
    assert status.returncode == 0 and "slurm: " in status.stdout, status.stderr

    _wait("every job to leave the queue", lambda: not _queue(cluster), timeout=HANG_GUARD_SECONDS)
    final = subprocess.run(
        make_cmd("continue", f"KCONFIG_CONFIG={cfg}"), env=_env(cluster), capture_output=True, text=True, timeout=300
    )
    assert final.returncode == 0, final.stderr
    assert "submitted " not in final.stderr and f"{matrix}: 6 done, 0 in Slurm, 6 runs" in final.stderr
    ledger = _ledger(matrix)
    assert {e["state"] for e in ledger.values()} == {"done"}
    assert all(e["attempts"] == 1 for e in ledger.values())  # recovered, never submitted a second time

    log = (first / results.LOG).read_text()
    assert "SIGTERM: checkpoint saved" in log and "resumed" in log  # the requeue stopped and resumed it
    for run_id in order:
        assert_same_run(reference / run_id, matrix / run_id)
