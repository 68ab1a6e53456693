"""The runner end to end on real LeNet-5 training: learning, run directories, failures, re-runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from lib import checkpoint, results
from tests.helpers import runner, write_config

pytestmark = pytest.mark.slow

SUMMARY_KEYS = {
    "run_id",
    "model",
    "optimizer",
    "pruning",
    "target_sparsity",
    "seed",
    "status",
    "final",
    "best",
    "sparsity",
    "train_seconds",
    "peak_memory_bytes",
    "throughput",
    "axes",
}


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """The quickstart defconfig restricted to AdamW: dense + magnitude at 50% and 90%, 30 epochs on digits."""
    tmp = tmp_path_factory.mktemp("quick")
    cfg = write_config(tmp / ".config", tmp / "results", "OPTIMIZER_SGD=n")
    proc = runner("run", "--config", str(cfg))
    return tmp / "results" / "quickstart", cfg, proc


def test_matrix_trains_every_run_and_dense_learns(quickstart):
    matrix, _, proc = quickstart
    assert proc.returncode == 0, proc.stderr
    runs = {r.run_id: r for r in results.load_runs(matrix)}
    assert sorted(runs) == [
        "lenet5-adamw-magnitude-s0.5-seed0",
        "lenet5-adamw-magnitude-s0.9-seed0",
        "lenet5-adamw-none-seed0",
    ]
    dense = runs["lenet5-adamw-none-seed0"].summary
    assert dense["final"]["accuracy"] >= 0.95  # the quickstart acceptance: LeNet-5 on digits, dense
    for run in runs.values():
        s = run.summary
        assert SUMMARY_KEYS <= set(s)
        assert s["status"] == "done" and s["steps"] == 30 * 45
        assert s["best"]["accuracy"] >= s["final"]["accuracy"] - 1e-12
        assert s["peak_memory_bytes"] > 0 and s["throughput"] > 0 and s["train_seconds"] > 0
        evals = [m for m in run.metrics if m["split"] == "eval"]
        assert [m["epoch"] for m in evals] == [float(e) for e in range(1, 31)]
        assert run.status["state"] == "done"
    env = json.loads((matrix / "lenet5-adamw-none-seed0" / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["cpu"] and "git_sha" in env
    assert (matrix.parent / "latest").resolve() == matrix.resolve()
    ledger = json.loads((matrix / "matrix.json").read_text())
    assert {r["state"] for r in ledger["runs"]} == {"done"}
    assert all(r["config"]["values"]["EPOCHS"] == 30 for r in ledger["runs"])


@pytest.mark.parametrize("target", [0.5, 0.9])
def test_pruned_runs_hit_target_with_exact_zeros(quickstart, target):
    matrix, _, _ = quickstart
    run_dir = matrix / f"lenet5-adamw-magnitude-s{target:g}-seed0"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert abs(summary["sparsity"] - target) <= 0.005
    state = checkpoint.load(run_dir / "checkpoint.pt")["model"]
    masks = {k: v for k, v in state.items() if k.endswith("weight_mask")}
    # the first conv and the head stay dense by default (PRUNING_EXCLUDE_FIRST_CONV, PRUNING_EXCLUDE_HEAD)
    assert sorted(masks) == ["conv2.weight_mask", "fc1.weight_mask", "fc2.weight_mask"]
    kept = total = 0
    for name, mask in masks.items():
        assert mask.dtype == torch.bool
        weight = state[name.replace("weight_mask", "weight")]
        assert torch.all(weight[~mask] == 0), name  # pruned weights are exactly zero
        kept += int(mask.sum())
        total += mask.numel()
    assert abs(1 - kept / total - target) <= 0.005


def test_rerun_skips_done_runs(quickstart):
    matrix, cfg, _ = quickstart
    before = (matrix / "lenet5-adamw-none-seed0" / "summary.json").read_bytes()
    proc = runner("run", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert "3 of 3 runs already done" in proc.stderr
    assert (matrix / "lenet5-adamw-none-seed0" / "summary.json").read_bytes() == before


def test_changed_config_for_existing_run_is_refused(quickstart):
    matrix, cfg, _ = quickstart
    ledger = (matrix / "matrix.json").read_bytes()
    proc = runner("run", "--config", str(cfg), "--set", "EPOCHS=2")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: run lenet5-adamw-none-seed0") and "EPOCHS: 30 -> 2" in lines[-1]
    assert "Traceback" not in proc.stderr
    assert (matrix / "matrix.json").read_bytes() == ledger  # nothing lost


def test_failed_runs_are_recorded_and_the_matrix_goes_on(tmp_path: Path):
    """SGD with an absurd learning rate diverges (NaN); AdamW in the same matrix still finishes."""
    cfg = write_config(
        tmp_path / ".config", tmp_path / "results", "PRUNING_MAGNITUDE=n", "EPOCHS=2", "SGD_LR=1e30", "MATRIX_NAME=fail"
    )
    proc = runner("run", "--config", str(cfg))
    assert proc.returncode == 1
    matrix = tmp_path / "results" / "fail"
    ledger = {r["run_id"]: r for r in json.loads((matrix / "matrix.json").read_text())["runs"]}
    assert ledger["lenet5-adamw-none-seed0"]["state"] == "done"
    failed = ledger["lenet5-sgd-none-seed0"]
    assert failed["state"] == "failed" and "non-finite training loss" in failed["reason"]
    summary = json.loads((matrix / "lenet5-sgd-none-seed0" / "summary.json").read_text())
    assert summary["status"] == "failed" and "non-finite" in summary["reason"]
    assert "FAILED  lenet5-sgd-none-seed0" in proc.stderr

    again = runner("continue", "--matrix", str(matrix))
    assert again.returncode == 1
    assert "retrying failed run lenet5-sgd-none-seed0 once" in again.stderr
    assert "1 of 2 runs already done" in again.stderr
    ledger = {r["run_id"]: r for r in json.loads((matrix / "matrix.json").read_text())["runs"]}
    assert ledger["lenet5-sgd-none-seed0"]["attempts"] == 2


def test_missing_device_fails_the_run_with_its_reason(tmp_path: Path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    cfg = write_config(
        tmp_path / ".config",
        tmp_path / "results",
        "PRUNING_MAGNITUDE=n",
        "OPTIMIZER_SGD=n",
        "EPOCHS=1",
        "DEVICE=cuda",
        "MATRIX_NAME=nocuda",
    )
    proc = runner("run", "--config", str(cfg))
    assert proc.returncode == 1
    status = json.loads((tmp_path / "results/nocuda/lenet5-adamw-none-seed0/status.json").read_text())
    assert status["state"] == "failed" and "no CUDA device is visible" in status["reason"]


def test_plan_prints_runs_and_count(tmp_path: Path):
    cfg = write_config(tmp_path / ".config", tmp_path / "results", "SEEDS=0 1 2")
    proc = runner("plan", "--config", str(cfg))
    assert proc.returncode == 0
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "18 runs"  # 2 optimizers x (none + magnitude x 2 sparsities) x 3 seeds
    assert any("pruning 'none' is dense" in line for line in lines)
    assert not (tmp_path / "results").exists()  # planning runs nothing and writes nothing


def test_continue_without_a_matrix_is_one_clear_error(tmp_path: Path):
    proc = runner("continue", "--matrix", str(tmp_path / "nothing"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "nothing to continue" in proc.stderr and "Traceback" not in proc.stderr


def test_one_gpu_per_job(tmp_path: Path, monkeypatch):
    """With GPUs visible, JOBS is capped to GPUs x JOBS_PER_GPU and each job gets its own GPU id.

    On this CPU-only machine the runs then train on the CPU, but the pinning is what the runner did."""
    cfg = write_config(
        tmp_path / ".config",
        tmp_path / "results",
        "OPTIMIZER_SGD=n",
        "EPOCHS=1",
        "TARGET_SPARSITIES=0.5 0.9",
        "JOBS=3",
        "MATRIX_NAME=gpus",
    )
    proc = runner("run", "--config", str(cfg), env={**os.environ, "CUDA_VISIBLE_DEVICES": "5,7"})
    assert proc.returncode == 0, proc.stderr
    assert "JOBS=3 capped to 2: 2 GPU(s) x JOBS_PER_GPU=1" in proc.stderr
    pinned = {}
    for run in results.load_runs(tmp_path / "results" / "gpus"):
        first = (run.path / "log.txt").read_text().splitlines()[0]
        pinned[run.run_id] = first.rsplit("CUDA_VISIBLE_DEVICES=", 1)[1]
        assert json.loads((run.path / "env.json").read_text())["cuda_visible_devices"] == pinned[run.run_id]
    assert sorted(pinned.values()) in (["5", "5", "7"], ["5", "7", "7"])
    # the first two runs start together, on different GPUs
    first_two = [pinned[r] for r in ("lenet5-adamw-none-seed0", "lenet5-adamw-magnitude-s0.5-seed0")]
    assert sorted(first_two) == ["5", "7"]


def test_ddp_runs_get_groups_of_gpus():
    from lib.errors import UserError
    from lib.scheduler import gpu_groups

    assert gpu_groups(["0", "1", "2", "3", "4"], 2) == ["0,1", "2,3"]  # GPU 4 idles: 2 does not divide 5
    assert gpu_groups(["5", "7"], 1) == ["5", "7"] and gpu_groups([], 4) == []
    with pytest.raises(UserError, match="DDP_PROCS=4 needs 4 GPUs per run but 2 are visible"):
        gpu_groups(["0", "1"], 4)


def test_every_optimizer_end_to_end(tmp_path: Path):
    """The lenet5-optimizers defconfig, shortened: every optimizer trains; AdamWPrune prunes to its target
    with state pruning, and bitter2 trains ADAMWPRUNE_BUDGET_SCALE times longer."""
    cfg = write_config(
        tmp_path / ".config",
        tmp_path / "results",
        "EPOCHS=1",
        "ADAMWPRUNE_VARIANTS=bitter0 bitter2",
        "JOBS=2",
        defconfig="lenet5-optimizers",
    )
    proc = runner("run", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    runs = {r.run_id: r.summary for r in results.load_runs(tmp_path / "results" / "lenet5-optimizers")}
    assert sorted(runs) == sorted(
        [f"lenet5-{o}-none-seed0" for o in ("sgd", "adam", "adamw", "adamwadv", "adamwspam", "muon")]
        + [f"lenet5-adamwprune-{v}-state-s0.7-seed0" for v in ("bitter0", "bitter2")]
    )
    for run_id, summary in runs.items():
        assert summary["status"] == "done", run_id
        assert summary["final"]["accuracy"] > 0.3, run_id  # well above chance (0.1) after one epoch
    for variant, epochs in (("bitter0", 1), ("bitter2", 2)):  # ceil(1 * 1.21) = 2
        summary = runs[f"lenet5-adamwprune-{variant}-state-s0.7-seed0"]
        assert summary["variant"] == variant and summary["pruning"] == "state"
        assert summary["epochs"] == epochs and summary["steps"] == 45 * epochs
        assert abs(summary["sparsity"] - 0.7) <= 0.005
