"""ONESHOT_AFTER_TRAINING: a GPT-2 run, trained by its real entrypoint, is pruned in one shot by each selected
method at each ONESHOT_SPARSITIES and ONESHOT_PATTERNS before it exits; a resumed run redoes only the missing
results; a stop request between two of them ends the run as interrupted, with the finished ones kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lib import config as cfgmod
from lib import results
from lib.errors import UserError
from lib.matrix import expand
from lib.trainer import Interrupted
from scripts import prune
from tests.helpers import HANG_GUARD_SECONDS, ROOT

SETTINGS = [
    "MODEL_LENET5=n", "MODEL_GPT2=y", "PRUNING_MAGNITUDE=n", "OPTIMIZER_SGD=n", "GPT2_SIZE=custom",
    "GPT2_N_LAYER=1", "GPT2_N_EMBD=32", "GPT2_N_HEAD=2", "GPT2_BLOCK_SIZE=32", "BATCH_SIZE=4",
    "GPT2_MAX_ITERS=6", "GPT2_EVAL_INTERVAL=3", "GPT2_EVAL_BATCHES=2",
    "ONESHOT_MAGNITUDE=y", "ONESHOT_WANDA=y", "ONESHOT_AFTER_TRAINING=y", "ONESHOT_SPARSITIES=0.3 0.6",
    "ONESHOT_SAMPLES=4", "ONESHOT_SEQLEN=32", "ONESHOT_EVAL_WINDOWS=2", "ONESHOT_PATTERNS=2:4",
]  # fmt: skip
RESULTS = ["magnitude-0.3", "magnitude-0.5-2of4", "magnitude-0.6", "wanda-0.3", "wanda-0.5-2of4", "wanda-0.6"]


def _run_dir(tmp_path: Path) -> Path:
    spec = expand(cfgmod.from_defaults([*SETTINGS, f"DATA_DIR={tmp_path / 'data'}"])).runs[0]
    run = tmp_path / spec.run_id
    run.mkdir()
    results.atomic_write_json(run / results.CONFIG, spec.to_json())
    return run


def _train(run: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "models.gpt2.train", "--run-dir", str(run), "--threads", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
    )


@pytest.mark.slow
def test_a_trained_run_is_pruned_before_it_exits_and_resumes_the_missing_results(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    proc = _train(run)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (run / "oneshot").iterdir()) == RESULTS
    for name in RESULTS:
        summary = results.read_json(run / "oneshot" / name / results.PRUNE_JSON)
        method, target, *pattern = name.split("-")
        assert summary["method"] == method and summary["target"] == float(target)
        assert summary["pattern"] == ("2:4" if pattern else None)
        assert summary["sparsity"] == pytest.approx(float(target), abs=0.01)
        assert summary["calibration"] == {"corpus": "pydoc", "samples": 4, "seqlen": 32, "seed": 0}
        ppl = summary["perplexity"]
        assert 1 < ppl["before"] < ppl["after"]  # the trained model, then pruned: worse
    befores = {results.read_json(run / "oneshot" / n / results.PRUNE_JSON)["perplexity"]["before"] for n in RESULTS}
    assert len(befores) == 1  # every result starts from the same checkpoint and validation windows
    assert results.read_json(run / results.STATUS)["state"] == "done"

    # As if the run had been killed while pruning wanda-0.6: the next start redoes that one alone.
    kept = {n: (run / "oneshot" / n / results.PRUNE_JSON).stat().st_mtime_ns for n in RESULTS[:5]}
    (run / "oneshot" / "wanda-0.6" / results.PRUNE_JSON).unlink()
    proc = _train(run)
    assert proc.returncode == 0, proc.stderr
    assert (run / "oneshot" / "wanda-0.6" / results.PRUNE_JSON).is_file()
    assert {n: (run / "oneshot" / n / results.PRUNE_JSON).stat().st_mtime_ns for n in RESULTS[:5]} == kept
    assert proc.stderr.count("one-shot:") == 1


def test_a_stop_request_between_two_results_interrupts_and_keeps_the_finished_ones(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    for name in RESULTS[:3]:  # finished before the stop
        (run / "oneshot" / name).mkdir(parents=True)
        results.atomic_write_json(run / "oneshot" / name / results.PRUNE_JSON, {"method": name})
    with pytest.raises(Interrupted, match="before one-shot wanda-0.3$"):
        prune.after_training(run, lambda: True)
    assert sorted(p.name for p in (run / "oneshot").iterdir()) == RESULTS[:3]


def test_runs_without_the_stage_are_left_alone(tmp_path: Path) -> None:
    spec = expand(cfgmod.from_defaults(SETTINGS[:5])).runs[0]
    run = tmp_path / spec.run_id
    run.mkdir()
    results.atomic_write_json(run / results.CONFIG, spec.to_json())
    assert prune.after_training(run, lambda: True) == [] and not (run / "oneshot").exists()
    with pytest.raises(UserError, match="ONESHOT_AFTER_TRAINING=y did not take effect .* ONESHOT_WANDA"):
        cfgmod.from_defaults(["ONESHOT_AFTER_TRAINING=y"])  # no method selected
    with pytest.raises(UserError, match="ONESHOT_SPARSITIES"):
        cfgmod.from_defaults([*SETTINGS, "ONESHOT_SPARSITIES=0.5 1.5"])
    with pytest.raises(UserError, match=r"ONESHOT_PATTERNS='2:4 4:2': '4:2' is not N:M with 1 <= N < M"):
        cfgmod.from_defaults([*SETTINGS, "ONESHOT_PATTERNS=2:4 4:2"])
    with pytest.raises(UserError, match="ONESHOT_PATTERNS='2:4 2:4' repeats a pattern"):
        cfgmod.from_defaults([*SETTINGS, "ONESHOT_PATTERNS=2:4 2:4"])
