"""Trackers mirror metrics.jsonl and never kill a run: a real LeNet-5 run with trackio and wandb (offline) read
back from their own stores, trackers that fail in a real run, the fan-out's resume skipping, the pre-flight check
and the synthetic test runs of `make trackio-test` / `make wandb-test`."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lib import checkpoint, results, tracking
from lib import runner as runner_cli
from lib.config import ROOT, Config, from_defaults
from lib.errors import UserError
from lib.matrix import expand
from lib.tracking import TRACKERS, TrackedRun, Tracker, Trackers
from tests.helpers import HANG_GUARD_SECONDS, runner, write_config

RUN_ID = "lenet5-adamw-none-seed0"
# One epoch of 6 steps (1437 training digits, batch 256), a training row every 2 steps.
SHORT = ("OPTIMIZER_SGD=n", "PRUNING_MAGNITUDE=n", "EPOCHS=1", "BATCH_SIZE=256", "LOG_INTERVAL=2")
NOT_LOGGED_IN = (
    "error: TRACKER_WANDB: wandb is not logged in: run `wandb login` once, or set WANDB_MODE=offline to log "
    "without a network"
)


def tracker_env(tmp: Path, wandb_mode: str = "offline") -> dict[str, str]:
    """Our environment without any wandb or trackio setting of this machine: their files, credentials and
    settings all under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "TRACKIO_"))}
    env.update(
        TRACKIO_DIR=str(tmp / "trackio"),
        WANDB_MODE=wandb_mode,
        WANDB_CONFIG_DIR=str(tmp / "wandb-config"),
        WANDB_CACHE_DIR=str(tmp / "wandb-cache"),
        WANDB_DATA_DIR=str(tmp / "wandb-data"),
        NETRC=str(tmp / "no-netrc"),
        TMPDIR=str(tmp),
    )
    return env


def metrics(row: dict) -> dict:
    """What a tracker must receive for a metrics.jsonl row: each number as <split>/<key>."""
    return {f"{row['split']}/{k}": v for k, v in row.items() if k not in ("split", "step") and v is not None}


def trackio_logs(trackio_dir: Path, project: str, run: str) -> list[dict]:
    """The rows trackio stored for ``run``, read with trackio's own storage class (its directory is fixed when
    trackio is imported, so it is pointed at ``trackio_dir`` here)."""
    from trackio import sqlite_storage

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sqlite_storage, "TRACKIO_DIR", trackio_dir)
        records = sqlite_storage.SQLiteStorage.get_run_records(project)
        assert [r["name"] for r in records] == [run], "one trackio run, continued rather than started again"
        logs = sqlite_storage.SQLiteStorage.get_logs(project, run)
    return [{k: v for k, v in log.items() if k != "timestamp"} for log in logs]


def wandb_records(path: Path) -> list:
    """The records of a wandb run file (``run-<id>.wandb``): a 7-byte header, then LevelDB-log blocks of 32 KiB
    whose chunks (4-byte CRC, 2-byte length, 1-byte type: 1 full, 2 first, 3 middle, 4 last) carry wandb's
    protobuf ``Record`` messages."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunks, out = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        chunks, pos = chunks + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            out.append(record)
            chunks = b""
    return out


def wandb_items(items) -> dict:
    return {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in items}


# --------------------------------------------------------------------------- a real run, both trackers


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> tuple[Path, Path]:
    """(tmp, run directory) of a LeNet-5 run logged to trackio and to wandb offline at once."""
    tmp = tmp_path_factory.mktemp("tracked")
    cfg = write_config(
        tmp / ".config", tmp / "results", *SHORT, "MATRIX_NAME=tracked", "TRACKER_TRACKIO=y", "TRACKER_WANDB=y"
    )
    proc = runner("run", "--config", str(cfg), env=tracker_env(tmp))
    assert proc.returncode == 0, proc.stderr
    return tmp, tmp / "results" / "tracked" / RUN_ID


def derived_project(run_dir: Path) -> str:
    values = results.read_json(run_dir / results.CONFIG)["values"]
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"lenet5-{digest[:8]}"


@pytest.mark.slow
def test_trackio_holds_every_row_of_metrics_jsonl_and_the_summary(tracked):
    tmp, run_dir = tracked
    rows = results.read_jsonl(run_dir / results.METRICS)
    assert {r["split"] for r in rows} >= {"train", "eval"} and len(rows) > 5
    logs = trackio_logs(tmp / "trackio", derived_project(run_dir), RUN_ID)
    *mirrored, last = logs
    assert mirrored == [{"step": r["step"], **metrics(r)} for r in rows]
    summary = results.read_json(run_dir / results.SUMMARY)
    assert last["step"] == summary["steps"] == 6
    assert last["summary/final/accuracy"] == summary["final"]["accuracy"]
    assert last["summary/best/accuracy"] == summary["best"]["accuracy"] and last["summary/best/step"] == 6


@pytest.mark.slow
def test_wandb_offline_holds_every_row_of_metrics_jsonl_and_the_summary(tracked):
    _, run_dir = tracked
    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    records = wandb_records(path)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.project, run.run_group, run.display_name) == (derived_project(run_dir), "tracked", RUN_ID)
    env = results.read_json(run_dir / results.ENV)
    assert run.run_id == tracking.run_key("tracked", RUN_ID, env["started"])
    history = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = wandb_items(r.history.item)
            history[r.history.step.num] = {k: v for k, v in items.items() if not k.startswith("_")}
    expected: dict[int, dict] = {}  # wandb keeps one row per step: the rows of a step merge, the last value wins
    for row in results.read_jsonl(run_dir / results.METRICS):
        expected.setdefault(row["step"], {}).update(metrics(row))
    assert history == expected
    summary, final = results.read_json(run_dir / results.SUMMARY), {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            final.update(wandb_items(r.summary.update))
    assert final["final/accuracy"] == summary["final"]["accuracy"] and final["best/step"] == summary["best"]["step"]
    assert final["sparsity"] == summary["sparsity"]


def use_env(monkeypatch, env: dict[str, str]) -> None:
    for name in [n for n in os.environ if n.startswith(("WANDB_", "TRACKIO_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.slow
def test_continue_checks_the_ledgers_trackers_first(tracked, monkeypatch):
    """The ledger's config (not .config) selects the trackers; wandb without credentials is one line."""
    tmp, run_dir = tracked
    use_env(monkeypatch, tracker_env(tmp, wandb_mode="online"))
    args = argparse.Namespace(config=str(tmp / ".config"), set="", matrix=str(run_dir.parent), jobs="")
    with pytest.raises(UserError) as info:
        runner_cli.cmd_continue(args)
    assert f"error: {info.value}" == NOT_LOGGED_IN


def test_run_checks_the_trackers_before_anything_starts(tmp_path: Path, monkeypatch):
    cfg = write_config(tmp_path / ".config", tmp_path / "results", *SHORT, "TRACKER_WANDB=y")
    use_env(monkeypatch, tracker_env(tmp_path, wandb_mode="online"))
    with pytest.raises(UserError) as info:
        runner_cli.cmd_run(argparse.Namespace(config=str(cfg), set=""))
    assert f"error: {info.value}" == NOT_LOGGED_IN
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------- trackers that fail in a real run


class InitFails(Tracker):
    package = "json"  # any module that imports

    def start(self, run: TrackedRun) -> str:
        raise ConnectionError("no network\nsecond line")


class LogFails(Tracker):
    package = "json"
    calls: list = []

    def start(self, run: TrackedRun) -> str:
        return "nowhere"

    def log(self, metrics: dict, step: int) -> None:
        LogFails.calls.append(("log", step))
        raise RuntimeError("disk full")

    def finish(self, summary: dict | None, step: int) -> None:
        LogFails.calls.append(("finish", step))


@pytest.mark.slow
def test_a_tracker_that_fails_is_one_warning_and_the_run_finishes(tmp_path, monkeypatch, caplog):
    from lib.training import RunContext, fit
    from models.lenet5.train import build

    monkeypatch.setitem(TRACKERS._items, "trackio", InitFails)
    monkeypatch.setitem(TRACKERS._items, "wandb", LogFails)
    monkeypatch.setattr(LogFails, "calls", [])
    cfg = from_defaults([*SHORT, f"RESULTS_DIR={tmp_path}", "TRACKER_TRACKIO=y", "TRACKER_WANDB=y"])
    spec = expand(cfg).runs[0]
    run_dir = tmp_path / spec.run_id
    run_dir.mkdir()
    results.atomic_write_json(run_dir / results.CONFIG, spec.to_json())
    ctx = RunContext.open(run_dir, torch.get_num_threads())
    with caplog.at_level(logging.WARNING, logger="lib.tracking"):
        summary = fit(ctx, *build(ctx))
    assert summary["status"] == "done" and results.read_json(run_dir / results.SUMMARY)["status"] == "done"
    assert results.read_json(run_dir / results.STATUS)["state"] == "done"
    assert [r.getMessage() for r in caplog.records if r.name == "lib.tracking"] == [
        "tracker trackio: start failed (ConnectionError: no network); trackio is off for the rest of this run, "
        "metrics.jsonl keeps every row",
        "tracker wandb: log failed (RuntimeError: disk full); wandb is off for the rest of this run, "
        "metrics.jsonl keeps every row",
    ]
    first = results.read_jsonl(run_dir / results.METRICS)[0]["step"]
    assert LogFails.calls == [("log", first)], "called once, then off: no more rows and no finish"


# --------------------------------------------------------------------------- the fan-out


class Recorder(Tracker):
    package = "json"
    made: list[Recorder] = []

    def __init__(self) -> None:
        super().__init__()
        self.calls: list = []
        Recorder.made.append(self)

    def start(self, run: TrackedRun) -> str:
        self.calls.append(("start", run))
        return "here"

    def log(self, metrics: dict, step: int) -> None:
        self.calls.append(("log", step, metrics))

    def finish(self, summary: dict | None, step: int) -> None:
        self.calls.append(("finish", step, summary))


@pytest.fixture
def recorders(monkeypatch) -> list[Recorder]:
    """Both tracker names record what they are sent."""
    monkeypatch.setattr(Recorder, "made", [])
    monkeypatch.setitem(TRACKERS._items, "trackio", Recorder)
    monkeypatch.setitem(TRACKERS._items, "wandb", Recorder)
    return Recorder.made


SUMMARY = {
    "run_id": "r",
    "axes": {"seed": 0},
    "status": "done",
    "final": {"accuracy": 0.5, "loss": 1.5},
    "best": {"accuracy": 0.625, "loss": 1.25, "step": 25},
    "sparsity": 0.0,
    "layer_sparsity": {"fc1": 0.0},
    "throughput": None,
    "steps": 30,
}
# Its numbers, nested keys joined; the axes and per-layer sparsities left out.
SUMMARY_METRICS = {"final/accuracy": 0.5, "final/loss": 1.5, "best/accuracy": 0.625, "best/loss": 1.25}
SUMMARY_METRICS |= {"best/step": 25, "sparsity": 0.0, "steps": 30}


def test_a_resumed_run_sends_only_the_steps_its_trackers_do_not_have(recorders):
    trackers = Trackers(["trackio"], skip_through=20)
    trackers.init("p", group="m", name="r", config={"a": 1}, key="k", resumed=True)
    for step in (10, 20, 20, 25, 30):  # replayed from the checkpoint at step 10 on; sent until step 20 before
        trackers.log({"split": "train", "step": step, "loss": step / 10, "note": "text"}, step)
    trackers.finish(SUMMARY)
    (recorder,) = recorders
    assert recorder.calls == [
        ("start", TrackedRun("p", "m", "r", "k", {"a": 1}, True, None)),
        ("log", 25, {"train/loss": 2.5}),
        ("log", 30, {"train/loss": 3.0}),
        ("finish", 30, SUMMARY_METRICS),
    ]


def test_one_failing_tracker_leaves_the_others_every_row(recorders, monkeypatch, caplog):
    monkeypatch.setitem(TRACKERS._items, "trackio", LogFails)
    monkeypatch.setattr(LogFails, "calls", [])
    trackers = Trackers(["trackio", "wandb"])
    trackers.init("p", group="m", name="r", config={})
    with caplog.at_level(logging.WARNING, logger="lib.tracking"):
        for step in (1, 2):
            trackers.log({"split": "eval", "step": step, "accuracy": step / 4}, step)
        trackers.finish(None)
    assert len(caplog.records) == 1 and "tracker trackio: log failed (RuntimeError: disk full)" in caplog.text
    assert trackers.failed == {"trackio": "log: RuntimeError: disk full"} and trackers.active == {}
    (recorder,) = recorders
    sent = [(call[0], call[1]) for call in recorder.calls[1:]]
    assert sent == [("log", 1), ("log", 2), ("finish", 2)] and recorder.calls[-1] == ("finish", 2, None)
    assert LogFails.calls == [("log", 1)]


def test_no_tracker_selected_imports_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "trackio", None)  # an import of either would fail
    monkeypatch.setitem(sys.modules, "wandb", None)
    cfg = from_defaults()
    tracking.preflight(cfg)
    trackers = Trackers(tracking.selected(cfg))
    trackers.init("p", group="m", name="r", config={})
    trackers.log({"split": "train", "step": 1, "loss": 1.0}, 1)
    trackers.finish(SUMMARY)
    assert trackers.names == [] and trackers.failed == {}


# --------------------------------------------------------------------------- naming, resume, old runs


def test_a_runs_trackers_are_named_and_resumed_from_its_directory(recorders, tmp_path):
    cfg = from_defaults(["TRACKER_TRACKIO=y", "TRACKER_PROJECT=mine", "MATRIX_NAME=mx"])
    spec = expand(cfg).runs[0]
    env = {"started": 12.5, "resumed": [{"at_step": 10, "logged_step": 30}, {"at_step": 20, "logged_step": 25}]}
    results.atomic_write_json(tmp_path / results.ENV, env)
    resumed = tracking.for_run(spec, tmp_path, resumed=True)
    fresh = tracking.for_run(spec, tmp_path, resumed=False)
    assert (resumed.skip_through, fresh.skip_through) == (30, None)
    key = tracking.run_key("mx", spec.run_id, 12.5)
    assert [r.calls[0][1] for r in recorders] == [
        TrackedRun("mine", "mx", spec.run_id, key, spec.to_json(), resumed, tmp_path) for resumed in (True, False)
    ]


def test_the_derived_project_is_the_model_and_a_checksum_of_the_config():
    cfg = from_defaults(["TRACKER_WANDB=y"])
    digest = hashlib.sha256(json.dumps(cfg.to_json(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert cfg["TRACKER_PROJECT"] == "" and tracking.project(cfg, "lenet5") == f"lenet5-{digest[:8]}"
    assert tracking.project(from_defaults(["TRACKER_WANDB=y", "EPOCHS=3"]), "lenet5") != f"lenet5-{digest[:8]}"
    assert tracking.project(from_defaults(["TRACKER_WANDB=y", "TRACKER_PROJECT=p"]), "lenet5") == "p"


def test_the_wandb_id_lasts_the_runs_life_and_suits_wandb():
    long_id = "gpt2/x:" * 20
    assert tracking.run_key("m", "r", 1.0) == tracking.run_key("m", "r", 1.0) != tracking.run_key("m", "r", 2.0)
    assert tracking.run_key("m", "r", 1.0) != tracking.run_key("n", "r", 1.0)
    key = tracking.run_key("m", long_id, 1.0)
    assert len(key) == 64 and key.startswith("gpt2-x-gpt2-x-") and set(key) <= set("gpt2x-0123456789abcdef")


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [
        ({"TRACKER": "none", "TRACKER_NONE": True, "TRACKER_TRACKIO": False, "TRACKER_WANDB": False}, []),
        ({"TRACKER": "wandb", "TRACKER_NONE": False, "TRACKER_TRACKIO": False, "TRACKER_WANDB": True}, ["wandb"]),
        ({"EPOCHS": 3}, []),
    ],
    ids=["none", "wandb", "no-tracker-symbols"],
)
def test_a_run_recorded_before_trackers_were_bools_reads(recorded, expected):
    assert tracking.selected(Config.from_json(recorded)) == expected


class Layer:
    """What resume_training needs of a schedule and a pruner."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def test_resume_records_the_last_step_metrics_jsonl_had_before_the_cut(tmp_path):
    model = nn.Linear(2, 2)
    parts = {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1), "schedule": Layer()}
    parts["pruner"] = Layer()
    checkpoint.save_training(
        tmp_path / results.CHECKPOINT, **parts, state={"step": 10, "metric_rows": 2}, threads=1, run_id="r"
    )
    steps = [("train", 5), ("train", 10), ("train", 15), ("memory", 17), ("eval", 15)]
    results.write_jsonl(tmp_path / results.METRICS, [{"split": s, "step": n} for s, n in steps])
    assert checkpoint.resume_training(tmp_path, torch.device("cpu"), **parts)["step"] == 10
    assert results.read_jsonl(tmp_path / results.METRICS) == [{"split": "train", "step": n} for n in (5, 10)]
    results.append_jsonl(tmp_path / results.METRICS, [{"split": "train", "step": 12}])  # interrupted again
    checkpoint.resume_training(tmp_path, torch.device("cpu"), **parts)
    records = results.read_json(tmp_path / results.ENV)["resumed"]
    assert [(r["at_step"], r["logged_step"]) for r in records] == [(10, 17), (10, 12)]


# --------------------------------------------------------------------------- pre-flight


def test_a_tracker_package_that_is_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "trackio", None)
    with pytest.raises(UserError) as info:
        tracking.preflight(from_defaults(["TRACKER_TRACKIO=y"]))
    message = str(info.value)
    assert message.startswith("TRACKER_TRACKIO: the trackio package is not installed (")
    assert message.endswith('): `make env EXTRAS="trackio wandb"` installs the trackers') and "\n" not in message


def test_wandb_offline_needs_no_login(tmp_path, monkeypatch):
    use_env(monkeypatch, tracker_env(tmp_path))
    tracking.check(["wandb"])
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(UserError, match="^TRACKER_WANDB: wandb is not logged in: run `wandb login` once"):
        tracking.check(["wandb"])


# --------------------------------------------------------------------------- make trackio-test / wandb-test


@pytest.mark.slow
def test_make_trackio_test_logs_a_synthetic_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lib.tracking", "test", "trackio"],
        cwd=ROOT,
        env=tracker_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
    )
    assert proc.returncode == 0, proc.stderr
    name = proc.stdout.splitlines()[-1].split()[5].rstrip(":")
    assert proc.stdout.splitlines()[-1] == (
        f"logged 33 rows of run {name}: trackio project {tracking.TEST_PROJECT} under {tmp_path / 'trackio'} "
        "(`make trackio-view`)"
    )
    *rows, last = trackio_logs(tmp_path / "trackio", tracking.TEST_PROJECT, name)
    assert rows == [{"step": r["step"], **metrics(r)} for r in tracking.synthetic_rows()]
    assert last["step"] == tracking.TEST_STEPS and last["summary/best/step"] == tracking.TEST_STEPS
