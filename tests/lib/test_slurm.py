"""The Slurm launcher without a cluster: settings -> sbatch options, the multi-node command, what the submitting
side reads from squeue and the run directories, and the errors that stop it before anything is submitted.
Slurm's own programs are stand-ins here (small scripts on PATH that print what squeue or sinfo would); the real
thing is `make test-slurm` (tests/slurm)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from lib import config as config_mod
from lib import results, slurm, status
from lib.errors import UserError
from lib.ledger import Ledger
from lib.matrix import expand
from tests.helpers import runner, write_config

FIX = 'fix it in `make menuconfig` (Runtime > Slurm) or with SET="SYM=VALUE"'


def values(*overrides: str) -> dict:
    return config_mod.from_defaults(["LAUNCHER_SLURM=y", *overrides]).to_json()


def fake_tools(folder: Path, **scripts: str) -> Path:
    """Executables named after Slurm's programs, each a shell script body; returns their folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return folder


def test_settings_become_sbatch_options() -> None:
    v = values(
        "SLURM_PARTITION=gpu",
        "SLURM_ACCOUNT=lab7",
        "SLURM_QOS=high",
        "SLURM_TIME_MINUTES=90",
        "SLURM_SIGNAL_SECONDS=300",
        "SLURM_CPUS_PER_RUN=12",
        "SLURM_MEM_GB=64",
        "SLURM_GPUS_PER_RUN=2",
        "DDP_PROCS=2",
        "SLURM_CONSTRAINT=h100|a100",
        "SLURM_EXTRA_SBATCH=--mail-type=END --exclusive",
        "SLURM_ARRAY_PARALLELISM=5",
    )
    assert slurm.sbatch_parameters(v, "t0") == {
        "job_name": "sparsity-lab-t0",
        "time": 90,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": 12,
        "gpus_per_node": 2,
        "mem": "64G",
        "partition": "gpu",
        "account": "lab7",
        "qos": "high",
        "constraint": "h100|a100",
        "signal_delay_s": 300,
        "array_parallelism": 5,
        "stderr_to_stdout": True,
        "additional_parameters": {
            "requeue": True,
            "chdir": str(config_mod.ROOT),
            "mail_type": "END",
            "exclusive": True,
        },
    }


def test_defaults_leave_the_cluster_its_defaults() -> None:
    params = slurm.sbatch_parameters(values(), "t1")
    assert not {"partition", "account", "qos", "constraint", "mem", "gpus_per_node"} & set(params)
    assert (params["time"], params["cpus_per_task"], params["signal_delay_s"]) == (240, 4, 120)


def test_a_run_spans_nodes_when_it_needs_more_gpus_than_a_node_has() -> None:
    shape = slurm.Shape.of(values("SLURM_GPUS_PER_RUN=16", "DDP_PROCS=16", "SLURM_GPUS_PER_NODE=8"))
    assert shape == slurm.Shape(nodes=2, procs_per_node=8, gpus_per_node=8, cpus=4)
    job = slurm.TrainJob("/m", "gpt2-adamw-none-seed0", "gpt2", "t", shape, 120)
    cmd = job.command(1, 2, ["n7", "n9"], "55_3")
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--nnodes=2"]
    port = 20000 + sum(map(ord, "55_3")) * 7919 % 20000
    assert cmd[4:] == [
        "--node-rank=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=n7:{port}",
        "--rdzv-id=55_3",
        "--nproc-per-node=8",
        "-m",
        "models.gpt2.train",
        "--run-dir",
        "/m/gpt2-adamw-none-seed0",
        "--threads",
        "1",
    ]
    one = slurm.TrainJob("/m", "r", "lenet5", "t", slurm.Shape.of(values("SLURM_CPUS_PER_RUN=3")), 120)
    assert one.command(0, 1, ["n1"], "9")[1:] == ["-m", "models.lenet5.train", "--run-dir", "/m/r", "--threads", "3"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("SLURM_GPUS_PER_RUN=4", "DDP_PROCS=2"),
            "SLURM_GPUS_PER_RUN=4 with DDP_PROCS=2: a DDP run takes one GPU per process, so the two must be equal "
            f"(or DDP_PROCS=1 for a run on one GPU); {FIX}",
        ),
        (
            ("SLURM_GPUS_PER_RUN=2",),
            "SLURM_GPUS_PER_RUN=2 with DDP_PROCS=1: one training process uses one GPU; set DDP_PROCS=2 to train on "
            f"2 GPUs, or SLURM_GPUS_PER_RUN=1; {FIX}",
        ),
        (
            ("SLURM_GPUS_PER_RUN=10", "DDP_PROCS=10", "SLURM_GPUS_PER_NODE=4"),
            f"SLURM_GPUS_PER_RUN=10 does not split evenly over the 3 nodes it needs at SLURM_GPUS_PER_NODE=4; use a "
            f"multiple of 3; {FIX}",
        ),
    ],
)
def test_inconsistent_gpu_settings_are_one_error(overrides, message) -> None:
    with pytest.raises(UserError) as e:
        slurm.Shape.of(values(*overrides))
    assert str(e.value) == message


def test_extra_sbatch_options_are_checked() -> None:
    with pytest.raises(UserError, match=r"'mail-type=END' is not --option or --option=value"):
        values("SLURM_EXTRA_SBATCH=mail-type=END")


def test_missing_sbatch_is_one_error_and_nothing_is_written(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / ".config", tmp_path / "results", "LAUNCHER_SLURM=y")
    proc = runner("run", "--config", str(cfg), env={**os.environ, "PATH": str(fake_tools(tmp_path / "bin"))})
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == (
        "error: LAUNCHER_SLURM needs Slurm's `sbatch` on PATH and it is not there: run `make` on a node that can "
        "submit jobs (a login node), or choose LAUNCHER_LOCAL; nothing was submitted"
    )
    assert sum(line.startswith("error:") for line in proc.stderr.splitlines()) == 1
    assert list((tmp_path / "results" / "quickstart").iterdir()) == []  # no ledger, no lock left


def test_unknown_partition_stops_before_sbatch(tmp_path: Path, monkeypatch) -> None:
    calls = tmp_path / "sbatch-calls"
    bin_dir = fake_tools(
        tmp_path / "bin", sinfo="printf 'debug\\ngpu\\n'", sbatch=f"echo called >> {calls}", srun="true"
    )
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(UserError) as e:
        slurm.preflight(values("SLURM_PARTITION=gpu,nope"))
    assert str(e.value) == (
        f"SLURM_PARTITION='gpu,nope': the cluster has no partition 'nope' (it has: debug, gpu); {FIX}; "
        "nothing was submitted"
    )
    slurm.preflight(values("SLURM_PARTITION=gpu"))
    assert not calls.exists()


def test_sbatch_refusing_leaves_the_ledger_as_it_was(tmp_path: Path, monkeypatch) -> None:
    matrix = _matrix(tmp_path)
    before = (matrix / results.LEDGER).read_bytes()
    bin_dir = fake_tools(
        tmp_path / "bin",
        sinfo="echo debug",
        squeue="true",
        srun="true",
        sbatch="echo 'sbatch: error: Batch job submission failed: Invalid account or account/partition' >&2; exit 1",
    )
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(UserError, match=r"^sbatch refused the jobs \(.*Invalid account or account/partition.*\); fix"):
        slurm.launch(matrix, Ledger(matrix), values())
    assert (matrix / results.LEDGER).read_bytes() == before
    assert not list((matrix / slurm.SUBMISSIONS).glob("*.json"))


def _matrix(tmp_path: Path) -> Path:
    """A quickstart matrix's ledger, every run pending, nothing run."""
    cfg = config_mod.load(str(write_config(tmp_path / ".config", tmp_path / "results", "LAUNCHER_SLURM=y")))
    matrix = tmp_path / "results" / "quickstart"
    matrix.mkdir(parents=True)
    ledger = Ledger(matrix)
    ledger.merge(expand(cfg).runs)
    ledger.save()
    return matrix


def _record(run_dir: Path, job: str, rc: int | None, state: str | None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    results.atomic_write_json(run_dir / results.SLURM_JOB, {"job": job, "submission": "t", "rc": rc})
    if state:
        results.atomic_write_json(run_dir / results.STATUS, {"state": state, "step": 40, "total_steps": 90})


def test_the_outcome_of_an_ended_job(tmp_path: Path) -> None:
    _record(tmp_path / "a", "5_1", 0, "done")
    assert slurm.ended(tmp_path / "a", "5_1") == ("done", None)
    _record(tmp_path / "b", "5_2", 130, "interrupted")
    assert slurm.ended(tmp_path / "b", "5_2") == (
        "interrupted",
        "stopped at step 40 by a signal; `make continue` resumes it (Slurm job 5_2)",
    )
    _record(tmp_path / "c", "5_3", None, "running")  # killed with its node: no exit status was written
    assert slurm.ended(tmp_path / "c", "5_3")[0] == "interrupted"
    assert "ended while the run trained" in slurm.ended(tmp_path / "c", "5_3")[1]
    _record(tmp_path / "d", "4_0", 0, "done")  # the record of an older job: this one never started the run
    assert slurm.ended(tmp_path / "d", "5_4") == (
        "interrupted",
        "Slurm job 5_4 ended before it started the run (cancelled?); `make continue` resubmits",
    )
    _record(tmp_path / "e", "5_5", 1, "failed")
    assert slurm.ended(tmp_path / "e", "5_5")[0] == "failed"


def test_a_submission_a_killed_make_left_is_recorded_not_repeated(tmp_path: Path, monkeypatch) -> None:
    matrix = _matrix(tmp_path)
    ledger = Ledger(matrix)
    order = sorted(ledger.runs)[:3]
    note = matrix / slurm.SUBMISSIONS / "t9.json"
    note.parent.mkdir(parents=True)
    note.write_text(json.dumps({"token": "t9", "created": 1.0, "runs": order}))
    names = tmp_path / "asked"
    squeue = f"echo \"$@\" > {names}; printf '77_0|RUNNING\\n77_1|PENDING\\n77_2|PENDING\\n'"
    sbatch_calls = tmp_path / "sbatch-calls"
    monkeypatch.setenv(
        "PATH", str(fake_tools(tmp_path / "bin", squeue=squeue, sinfo="echo debug", sbatch=f"echo x >> {sbatch_calls}"))
    )
    slurm._recover(matrix, ledger)
    assert "--name=sparsity-lab-t9" in names.read_text()
    for i, run_id in enumerate(order):
        entry = Ledger(matrix).runs[run_id]
        assert (entry["state"], entry["attempts"], entry["slurm"]["job"]) == ("submitted", 1, f"77_{i}")
    assert not note.exists()
    # make status: each submitted run beside its job's state
    lines = status.report(matrix, now=2.0)
    assert f"  submitted    {order[0]}" in next(line for line in lines if order[0] in line)
    assert next(line for line in lines if order[0] in line).endswith("slurm: RUNNING (job 77_0)")
    assert next(line for line in lines if order[1] in line).endswith("slurm: PENDING (job 77_1)")
    assert lines[-1] == "6 runs: 3 submitted, 3 pending"


def test_collect_records_ended_jobs_and_leaves_live_ones(tmp_path: Path) -> None:
    matrix = _matrix(tmp_path)
    ledger = Ledger(matrix)
    a, b = sorted(ledger.runs)[:2]
    for run_id, job in ((a, "8_0"), (b, "8_1")):
        ledger.runs[run_id].update(state="submitted", slurm={"job": job, "submission": "t", "submitted": 0.0})
    _record(matrix / a, "8_0", 0, "done")
    slurm.collect(matrix, ledger, {"8_1": "RUNNING"})
    assert (Ledger(matrix).runs[a]["state"], Ledger(matrix).runs[b]["state"]) == ("done", "submitted")
