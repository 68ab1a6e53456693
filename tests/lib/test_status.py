"""Status and time: `make status` on a half-finished ledger, each run's steps counted by hand, the estimate from
two done runs by hand, and progress lines stamped with the time when stderr is not a terminal."""

from __future__ import annotations

import calendar
import io
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lib import config as cfgmod
from lib import results
from lib.budget import image_budget
from lib.data import DATASETS, load_dataset
from lib.data.registry import TRAIN_SIZES
from lib.estimate import Estimate, Pace, items, paces, run_budget
from lib.ledger import Ledger, MatrixLock
from lib.matrix import expand
from lib.model_registry import MODEL_PACKAGES
from lib.progress import Lines, Meter, describe, duration
from lib.status import report
from lib.tasks import ImageClassification, LanguageModeling
from tests.helpers import runner, write_config

T0 = calendar.timegm((2026, 11, 30, 14, 5, 7))  # 2026-11-30 14:05:07 UTC
STAMPED = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"

# The quickstart matrix, in ledger (expansion) order.
SGD_NONE, SGD_S5, SGD_S9 = "lenet5-sgd-none-seed0", "lenet5-sgd-magnitude-s0.5-seed0", "lenet5-sgd-magnitude-s0.9-seed0"
ADAMW_NONE, ADAMW_S5 = "lenet5-adamw-none-seed0", "lenet5-adamw-magnitude-s0.5-seed0"
ADAMW_S9 = "lenet5-adamw-magnitude-s0.9-seed0"
KILLED = "killed by signal SIGKILL (out of memory?)"
STOPPED = "stopped at step 700 by a signal; `make continue` resumes it"


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def load(tmp_path: Path, *overrides: str, defconfig: str = "quickstart"):
    path = write_config(tmp_path / ".config", tmp_path / "results", *overrides, defconfig=defconfig)
    return path, cfgmod.load(path)


def write_run(matrix: Path, spec, status: dict, summary: dict | None = None, cpu: str = "Test CPU") -> None:
    run = matrix / spec.run_id
    run.mkdir()
    results.atomic_write_json(run / results.CONFIG, spec.to_json())
    results.atomic_write_json(run / results.STATUS, status)
    results.atomic_write_json(run / results.ENV, {"cpu": cpu, "gpu": None})
    if summary is not None:
        results.atomic_write_json(run / results.SUMMARY, summary)


def done(accuracy: float, seconds: float) -> dict:
    final = {"accuracy": accuracy}
    return {"status": "done", "metric": "accuracy", "final": final, "train_seconds": seconds, "steps": 1350}


@pytest.fixture
def half_finished(tmp_path: Path) -> tuple[Path, Path]:
    """(.config, matrix) of quickstart (JOBS=2): two runs done in 13.5 s and 18.9 s of training, one running
    (step 350 of 1350, 300 steps in the 30 s since its process started), one failed when its process was killed
    (its status.json still says running), one interrupted at step 700, one pending."""
    config, cfg = load(tmp_path, "JOBS=2")
    specs = {s.run_id: s for s in expand(cfg).runs}
    matrix = results.matrix_dir(cfg)
    matrix.mkdir(parents=True)
    ledger = Ledger(matrix)
    ledger.merge(list(specs.values()))
    for run_id, state, reason in (
        (SGD_NONE, "done", None),
        (ADAMW_NONE, "done", None),
        (SGD_S5, "running", None),
        (SGD_S9, "failed", KILLED),
        (ADAMW_S9, "interrupted", STOPPED),
    ):
        ledger.runs[run_id].update(state=state, reason=reason, attempts=1)
    ledger.save()
    write_run(matrix, specs[SGD_NONE], {"state": "done", "step": 1350, "total_steps": 1350}, done(0.9712, 13.5))
    write_run(matrix, specs[ADAMW_NONE], {"state": "done", "step": 1350, "total_steps": 1350}, done(0.98, 18.9))
    running = {"state": "running", "step": 350, "total_steps": 1350, "started": T0, "started_step": 50}
    write_run(matrix, specs[SGD_S5], {**running, "updated": T0 + 30})
    write_run(matrix, specs[SGD_S9], {"state": "running", "step": 0, "total_steps": 1350})
    write_run(matrix, specs[ADAMW_S9], {"state": "interrupted", "step": 700, "total_steps": 1350})
    return config, matrix


# --------------------------------------------------------------------------- make status


def status_lines(matrix: Path, header: str, running: str) -> list[str]:
    return [
        f"matrix {matrix}, {header}",
        f"  pending      {ADAMW_S5}",
        f"  interrupted  {ADAMW_S9}  {STOPPED}",
        f"  done         {ADAMW_NONE}            accuracy=0.9800",
        f"  {running}",
        f"  failed       {SGD_S9}    {KILLED}",
        f"  done         {SGD_NONE}              accuracy=0.9712",
    ]


def test_status_while_the_matrix_runs(half_finished) -> None:
    _, matrix = half_finished
    with MatrixLock(matrix):
        lines = report(matrix, now=T0 + 40)  # 1000 steps left at 0.1 s/step, 10 s after the last update
    assert lines == [
        *status_lines(matrix, f"run by pid {os.getpid()}", f"running      {SGD_S5}    step 350/1350 (25%), ETA 1m30s"),
        "6 runs: 2 done, 1 running, 1 failed, 1 interrupted, 1 pending",
    ]


def test_a_running_run_that_stopped_writing_says_so(half_finished) -> None:
    _, matrix = half_finished
    with MatrixLock(matrix):
        lines = report(matrix, now=T0 + 30 + 900)
    assert f"  running      {SGD_S5}    step 350/1350 (25%), ETA 0s; no update for 15m00s" in lines


def test_status_after_the_runner_died(half_finished) -> None:
    """`make status` itself (no process holds the lock): the run left running is interrupted, not running."""
    _, matrix = half_finished
    proc = runner("status", "--matrix", str(matrix))
    assert proc.returncode == 0, proc.stderr
    gone = "its runner is gone (stopped at step 350/1350); `make continue` resumes it"
    assert proc.stdout.splitlines() == [
        *status_lines(matrix, "not being run", f"interrupted  {SGD_S5}    {gone}"),
        "6 runs: 2 done, 1 failed, 2 interrupted, 1 pending",
    ]
    assert not (matrix / "matrix.lock").exists()  # status creates, locks and writes nothing


def test_status_without_a_ledger_is_one_error(tmp_path: Path) -> None:
    proc = runner("status", "--matrix", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: {tmp_path} has no matrix.json: nothing to report; run `make` first, or pass MATRIX=<results/dir>"
    ]


def test_lock_holder(tmp_path: Path) -> None:
    assert MatrixLock.holder(tmp_path) is None  # no lock file
    with MatrixLock(tmp_path):
        assert str(MatrixLock.holder(tmp_path)) == f"pid {os.getpid()}"
    assert MatrixLock.holder(tmp_path) is None
    assert not (tmp_path / "matrix.lock").exists() and list(tmp_path.iterdir()) == []  # released, nothing left


# --------------------------------------------------------------------------- steps, counted by hand


def test_lenet5_digits_steps(tmp_path: Path) -> None:
    _, cfg = load(tmp_path)
    assert {run_budget(s).steps for s in expand(cfg).runs} == {30 * 45}  # 30 epochs of ceil(1438 / 32) = 45
    _, cfg = load(tmp_path, "EPOCHS=3", "BATCH_SIZE=64")
    assert {run_budget(s) for s in expand(cfg).runs} == {image_budget(cfg)}
    assert image_budget(cfg).steps == 3 * 23 and image_budget(cfg).tokens is None  # ceil(1438 / 64) = 23


def test_adamwprune_bitter2_trains_its_budget_scale_longer(tmp_path: Path) -> None:
    optimizers = ("OPTIMIZER_SGD=n", "OPTIMIZER_ADAMW=n", "OPTIMIZER_ADAMWPRUNE=y")
    pruning = ("PRUNING_NONE=n", "PRUNING_MAGNITUDE=n", "PRUNING_STATE=y", "TARGET_SPARSITIES=0.5")
    variants = ("ADAMWPRUNE_VARIANTS=bitter0 bitter2", "ADAMWPRUNE_BUDGET_SCALE=1.5")
    _, cfg = load(tmp_path, *optimizers, *pruning, *variants)
    steps = {s.axes["variant"]: run_budget(s).steps for s in expand(cfg).runs}
    assert steps == {"bitter0": 30 * 45, "bitter2": 45 * 45}  # ceil(30 x 1.5) = 45 epochs


def test_gpt2_steps_and_tokens(tmp_path: Path) -> None:
    _, cfg = load(tmp_path, defconfig="gpt2-quick")  # tiny: context 256; batch 16, no accumulation
    assert {(run_budget(s).steps, run_budget(s).tokens) for s in expand(cfg).runs} == {(400, 400 * 16 * 256)}
    custom = ("GPT2_SIZE_CUSTOM=y", "GPT2_BLOCK_SIZE=64", "BATCH_SIZE=8", "GPT2_GRAD_ACCUM=3", "GPT2_MAX_ITERS=10")
    _, cfg = load(tmp_path, *custom, defconfig="gpt2-quick")
    budget = MODEL_PACKAGES["gpt2"].budget(cfg, 1.25)
    assert (budget.steps, budget.tokens) == (13, 13 * 8 * 3 * 64)  # ceil(10 x 1.25) = 13


def test_plan_prints_steps_and_tokens(tmp_path: Path) -> None:
    config, _ = load(tmp_path, defconfig="gpt2-quick")
    proc = runner("plan", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("  gpt2-adamw-none-seed0                  400 steps  1,638,400 tokens  model=gpt2  ")
    assert lines[-3:] == [
        "steps: 1,200 in all, 4,915,200 tokens",
        f"time: estimated once a run of {tmp_path / 'results' / 'gpt2-quick'} is done",
        "3 runs",
    ]


def test_budgets_are_the_trainers_step_counts(tmp_path: Path) -> None:
    _, cfg = load(tmp_path, "EPOCHS=3", "BATCH_SIZE=64")
    digits = load_dataset("digits", tmp_path)
    assert len(digits.train_x) == TRAIN_SIZES["digits"]
    task = ImageClassification(digits, torch.device("cpu"), cfg["BATCH_SIZE"])
    assert sum(task.periods(cfg, 1.5)) == image_budget(cfg, 1.5).steps == 5 * 23
    _, cfg = load(tmp_path, "GPT2_MAX_ITERS=10", "GPT2_EVAL_INTERVAL=4", defconfig="gpt2-quick")
    tokens = np.zeros(1000, dtype=np.uint16)
    lm = LanguageModeling(tokens, tokens, torch.device("cpu"), 16, 256, max_iters=10, eval_interval=4)
    assert sum(lm.periods(cfg, 1.25)) == MODEL_PACKAGES["gpt2"].budget(cfg, 1.25).steps == 13


def test_every_model_and_dataset_declares_its_budget() -> None:
    assert all(callable(package.budget) for package in MODEL_PACKAGES.values())
    assert sorted(TRAIN_SIZES) == sorted(DATASETS)


# --------------------------------------------------------------------------- the estimate, by hand

# Pace (13.5 + 18.9) s / (1350 + 1350) steps = 0.012 s/step: a run is 1350 x 0.012 = 16.2 s, the 6 runs 97.2 s.
# Left: 1000 steps of the running run (12.0 s), 16.2 s for the failed and the pending run, 650 steps of the
# interrupted one (7.8 s): 52.2 s; two at a time in ledger order, 12.0 | 16.2, then 16.2 after 12.0 and 7.8
# after 16.2: the last ends at 28.2 s.
ESTIMATE_TOTALS = [
    "steps: 8,100 in all",
    "pace: lenet5 0.012 s/step, from 2 done runs on Test CPU",
    "time: ~1m37s of training for 6 runs; ~52s left for the 4 not done, ~28s with JOBS=2",
]


def test_estimate_from_two_done_runs(half_finished) -> None:
    _, matrix = half_finished
    proc = runner("estimate", "--matrix", str(matrix))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"matrix {matrix}",
        f"  {SGD_NONE}              1,350 steps  ~16s  done",
        f"  {SGD_S5}    1,350 steps  ~16s",
        f"  {SGD_S9}    1,350 steps  ~16s",
        f"  {ADAMW_NONE}            1,350 steps  ~16s  done",
        f"  {ADAMW_S5}  1,350 steps  ~16s",
        f"  {ADAMW_S9}  1,350 steps  ~16s",
        *ESTIMATE_TOTALS,
    ]
    one_job = runner("estimate", "--matrix", str(matrix), "--jobs", "1").stdout.splitlines()[-1]
    assert one_job == "time: ~1m37s of training for 6 runs; ~52s left for the 4 not done"


def test_plan_shows_the_estimate(half_finished) -> None:
    config, matrix = half_finished
    before = {p: p.stat().st_mtime_ns for p in matrix.rglob("*")}
    proc = runner("plan", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    axes = "model=lenet5  optimizer=sgd  pruning=none  target_sparsity=0.0  seed=0"
    assert lines[1] == f"  {SGD_NONE}              1,350 steps  ~16s  {axes}"
    assert lines[-4:] == [*ESTIMATE_TOTALS, "6 runs"]
    assert {p: p.stat().st_mtime_ns for p in matrix.rglob("*")} == before  # planning writes nothing


def test_pace_counts_the_device_most_runs_used(half_finished) -> None:
    _, matrix = half_finished
    env = matrix / ADAMW_NONE / results.ENV
    results.atomic_write_json(env, {"cpu": "Test CPU", "gpu": "NVIDIA H200"})
    (pace,) = paces(results.load_matrix(matrix)).values()
    assert (pace.device, pace.runs, pace.seconds_per_step) == ("NVIDIA H200", 1, 18.9 / 1350)
    assert pace.line() == "pace: lenet5 0.014 s/step, from 1 done run on NVIDIA H200 (1 on other devices not counted)"


def test_models_without_a_done_run_are_not_estimated(tmp_path: Path) -> None:
    _, cfg = load(tmp_path, "MODEL_GPT2=y")
    runs = items(expand(cfg).runs)
    assert Estimate(runs, {}, 1).lines("m")[-1] == "time: estimated once a run of m is done"
    lines = Estimate(runs, {"lenet5": Pace("lenet5", "Test CPU", 0.012, 2)}, 1).lines("m")
    assert lines[-2:] == [
        "time: gpt2 not estimated: none of its runs is done yet",
        "time: ~1m37s of training for 6 of 12 runs; ~1m37s left for the 6 not done",
    ]


# --------------------------------------------------------------------------- progress lines


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_lines_are_stamped_when_not_a_terminal(utc) -> None:
    now = [T0]
    out = io.StringIO()
    lines = Lines(out, every=60, clock=lambda: now[0])
    running = {"state": "running", "step": 120, "total_steps": 180, "started": T0 - 60, "started_step": 0}
    lines.write("[3/6 done] run-a: started")
    now[0] += 59
    assert not lines.due()
    now[0] += 1
    assert lines.due() and not lines.due()
    lines.write(f"[3/6 done] run-a: {describe({**running, 'updated': T0}, now[0])}")
    assert out.getvalue().splitlines() == [
        "2026-11-30 14:05:07 [3/6 done] run-a: started",
        "2026-11-30 14:06:07 [3/6 done] run-a: step 120/180 (66%), ETA 0s",  # 60 steps at 0.5 s, 60 s ago
    ]
    quiet = Lines(Terminal(), every=0, clock=lambda: now[0])
    quiet.write("x")
    assert not quiet.due() and quiet.stream.getvalue() == ""  # on a terminal the bars say it


def test_eta_and_durations() -> None:
    status = {"step": 350, "total_steps": 1350, "started": T0, "started_step": 50, "updated": T0 + 30}
    assert describe(status, T0 + 30) == "step 350/1350 (25%), ETA 1m40s"
    assert describe({**status, "step": 50}, T0 + 30) == "step 50/1350 (3%), ETA unknown"
    assert describe({"state": "running", "step": 0}, T0) == "starting"
    durations = [duration(s) for s in (0.4, 59, 61, 3599.6, 3661, 90061)]
    assert durations == ["0s", "59s", "1m01s", "1h00m", "1h01m", "1d01h"]


def test_tokenising_progress(utc) -> None:
    now = [T0]
    out = io.StringIO()
    meter = Meter("tokenising pydoc-byte train", "documents", out, every=60, clock=lambda: now[0])
    meter.update(1, "1,000 tokens")
    now[0] += 60
    meter.update(1, "2,500 tokens")
    meter.close()
    assert out.getvalue().splitlines() == [
        "2026-11-30 14:06:07 tokenising pydoc-byte train: 2 documents, 2,500 tokens",
        "2026-11-30 14:06:07 tokenising pydoc-byte train: 2 documents, 2,500 tokens, done",
    ]
    bar = Terminal()
    meter = Meter("tokenising pydoc-byte train", "documents", bar, every=0)
    meter.update(3, "9 tokens")
    meter.close()
    assert "tokenising pydoc-byte train: 3 documents [" in bar.getvalue()
    assert not re.search(STAMPED, bar.getvalue())


@pytest.mark.slow
def test_runner_progress_in_a_log_file(tmp_path: Path) -> None:
    """A real one-run matrix with stderr to a pipe: its start and end are stamped lines (with a progress line
    each minute between them, if it takes that long); then status and estimate."""
    config, cfg = load(tmp_path, "OPTIMIZER_SGD=n", "PRUNING_MAGNITUDE=n", "EPOCHS=1")
    proc = runner("run", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    stamped = [line[20:] for line in proc.stderr.splitlines() if re.match(STAMPED + " ", line)]
    progress = re.compile(rf"\[0/1 done\] {ADAMW_NONE}: (starting|step \d+/45 \(\d+%\), ETA \S+)")  # each minute
    events = [line for line in stamped if not progress.fullmatch(line)]
    assert events == [f"[0/1 done] {ADAMW_NONE}: started", f"[1/1 done] {ADAMW_NONE}: done"], proc.stderr
    matrix = results.matrix_dir(cfg)
    status = results.read_json(matrix / ADAMW_NONE / results.STATUS)
    assert status["started_step"] == 0 and status["updated"] >= status["started"] and status["step"] == 45
    lines = runner("status", "--config", str(config)).stdout.splitlines()
    accuracy = results.load_run(matrix / ADAMW_NONE).final()
    assert lines == [
        f"matrix {matrix}, not being run",
        f"  done         {ADAMW_NONE}  accuracy={accuracy:.4f}",
        "1 run: 1 done",
    ]
    summary = results.read_json(matrix / ADAMW_NONE / results.SUMMARY)
    pace = summary["train_seconds"] / 45
    assert runner("estimate", "--config", str(config)).stdout.splitlines()[-1] == (
        f"time: ~{duration(45 * pace)} of training for 1 run; all done"
    )
    assert math.isclose(paces(results.load_matrix(matrix))["lenet5"].seconds_per_step, pace)
