"""DDP through torchrun on the CPU (gloo): two processes give the loss of one process with the same global
batch, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lib import checkpoint, results
from tests.helpers import HANG_GUARD_SECONDS, ROOT, assert_memory_timeline, computed_rows, processes_mentioning, runner
from tests.models.test_gpt2_training import _config

pytestmark = pytest.mark.slow

SETTINGS = ("GPT2_GRAD_ACCUM=2", "GPT2_MAX_ITERS=20", "GPT2_EVAL_INTERVAL=10", "LOG_INTERVAL=5")


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path: Path):
    one = _config(tmp_path, "one", *SETTINGS)
    two = _config(tmp_path, "two", *SETTINGS, "DDP_PROCS=2")
    for cfg in (one, two):
        proc = runner("run", "--config", str(cfg))
        assert proc.returncode == 0, proc.stderr
    run_one = tmp_path / "results/one/gpt2-adamw-none-seed0"
    run_two = tmp_path / "results/two/gpt2-adamw-none-seed0"
    assert "torch.distributed.run" in (run_two / "log.txt").read_text().splitlines()[0]
    rows_one, rows_two = (computed_rows(results.read_jsonl(r / "metrics.jsonl")) for r in (run_one, run_two))
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one]  # every row written once, by rank 0
    # Same maths, summed in another order (and with 1 thread per process instead of 2): equal to 1e-4.
    for a, b in zip(rows_one, rows_two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), (a, b)
    summary = json.loads((run_two / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 20
    wa = checkpoint.load(run_one / "checkpoint.pt")["model"]
    wb = checkpoint.load(run_two / "checkpoint.pt")["model"]
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-3, atol=1e-4)


def test_ddp_needs_micro_batches_for_every_process(tmp_path: Path):
    cfg = _config(tmp_path, "odd", "GPT2_GRAD_ACCUM=1", "GPT2_MAX_ITERS=4", "GPT2_EVAL_INTERVAL=4", "DDP_PROCS=2")
    proc = runner("run", "--config", str(cfg))
    assert proc.returncode == 1
    status = json.loads((tmp_path / "results/odd/gpt2-adamw-none-seed0/status.json").read_text())
    assert status["state"] == "failed" and "raise GPT2_GRAD_ACCUM or lower DDP_PROCS" in status["reason"]


def _rank_of(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(v.split(b"=", 1)[1]) for v in environ if v.startswith(b"RANK=")]
    return ranks[0] if ranks else None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers through /proc")
def test_a_stop_signal_to_one_rank_stops_every_rank_at_one_step_and_resumes_exactly(tmp_path: Path):
    """SIGUSR1 to rank 1 alone: the ranks agree on the step, rank 0 checkpoints, the run is interrupted (not
    failed), and `continue` ends exactly where an undisturbed two-process run ends."""
    reference = _config(tmp_path, "reference", *SETTINGS, "DDP_PROCS=2")
    assert runner("run", "--config", str(reference)).returncode == 0
    cfg = _config(tmp_path, "stopped", *SETTINGS, "DDP_PROCS=2")
    run = tmp_path / "results/stopped/gpt2-adamw-none-seed0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lib.runner", "run", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    rank1 = None
    while rank1 is None:  # rank 0 writes "running" once both ranks joined (both have their stop handlers)
        assert proc.poll() is None and time.monotonic() < deadline, "the DDP run never started"
        if (results.read_json(run / "status.json") or {}).get("state") == "running":
            rank1 = next((pid for pid in processes_mentioning(run) if _rank_of(pid) == 1), None)
        time.sleep(0.01)
    os.kill(rank1, signal.SIGSTOP)
    os.kill(rank1, signal.SIGUSR1)
    os.kill(rank1, signal.SIGCONT)
    stderr = proc.communicate(timeout=HANG_GUARD_SECONDS)[1]
    assert proc.returncode == 1
    assert "STOPPED gpt2-adamw-none-seed0: stopped at step" in stderr
    ledger = results.read_json(tmp_path / "results/stopped/matrix.json")
    assert [r["state"] for r in ledger["runs"]] == ["interrupted"]
    stopped_at = checkpoint.load(run / "checkpoint.pt")["state"]["step"]
    assert 0 < stopped_at < 20
    assert stopped_at % 5 == 0, "under DDP the ranks stop together at a log row (LOG_INTERVAL=5) or period end"
    assert "a stop signal on another rank: checkpoint saved" in (run / "log.txt").read_text()

    resumed = runner("continue", "--matrix", str(tmp_path / "results/stopped"))
    assert resumed.returncode == 0, resumed.stderr
    ref_run = tmp_path / "results/reference/gpt2-adamw-none-seed0"
    rows = results.read_jsonl(run / "metrics.jsonl")
    assert computed_rows(rows) == computed_rows(results.read_jsonl(ref_run / "metrics.jsonl"))
    assert_memory_timeline(rows)
    a, b = checkpoint.load(ref_run / "checkpoint.pt")["model"], checkpoint.load(run / "checkpoint.pt")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
