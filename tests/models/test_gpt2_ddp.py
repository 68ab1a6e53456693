"""DDP through torchrun on the CPU (gloo): two processes give the loss of one process with the same global
batch, and only rank 0 writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lib import checkpoint, results
from tests.helpers import runner
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
    rows_one, rows_two = (results.read_jsonl(r / "metrics.jsonl") for r in (run_one, run_two))
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
