"""`make sample`: a GPT-2 run's checkpoint is rebuilt from its own config and sampled reproducibly."""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

import pytest
import torch

from lib import config as cfgmod
from lib import results
from lib.matrix import expand
from models.gpt2.model import GPT2
from models.gpt2.train import model_config
from scripts import sample, update_graphs
from tests.helpers import HANG_GUARD_SECONDS, Planted, make_cmd, make_env, make_run, write_config


def _run_dir(tmp_path: Path, *extra: str) -> tuple[Path, GPT2]:
    overrides = ["MODEL_LENET5=n", "MODEL_GPT2=y", "PRUNING_MAGNITUDE=n", "OPTIMIZER_SGD=n", "GPT2_SIZE=custom"]
    overrides += ["GPT2_N_LAYER=1", "GPT2_N_EMBD=32", "GPT2_N_HEAD=2", "GPT2_BLOCK_SIZE=32", *extra]
    spec = expand(cfgmod.from_defaults(overrides)).runs[0]
    run = tmp_path / spec.run_id
    run.mkdir()
    results.atomic_write_json(run / results.CONFIG, spec.to_json())
    torch.manual_seed(3)
    model = GPT2(model_config(spec.cfg, spec.axes, 257))
    state = model.state_dict()
    state["transformer.h.0.mlp.c_fc.weight_mask"] = torch.ones(128, 32, dtype=torch.bool)  # as a pruned run has
    torch.save({"model": state}, run / results.BEST_CHECKPOINT)
    return run, model


def test_sample_rebuilds_the_run_and_is_reproducible(tmp_path: Path, caplog):
    run, model = _run_dir(tmp_path, "ATTN_GATE_NONE=n", "ATTN_GATE_CONST=y")
    loaded, tokenizer = sample.load_model(run)
    assert loaded.config.attn_gate == "const" and loaded.config.vocab_size == 320
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with caplog.at_level(logging.INFO, logger="scripts.sample"):
        a = sample.sample(run, "def ", tokens=20, seed=5)
    (speed,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sampled ")]  # how fast
    seconds, rate = re.fullmatch(r"sampled 1 x 20 tokens in ([0-9.]+) s on cpu: ([0-9.]+) tokens/s", speed).groups()
    assert float(seconds) < 0.1 or float(rate) == pytest.approx(20 / float(seconds), rel=0.06)
    assert a == sample.sample(run, "def ", tokens=20, seed=5) and a[0].startswith("def ")
    assert a != sample.sample(run, "def ", tokens=20, seed=6)


def test_make_sample_errors_are_one_line(tmp_path: Path):
    proc = subprocess.run(
        make_cmd("sample", f"RUN={tmp_path}"),
        env=make_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
    )
    assert proc.returncode != 0 and "is not a run directory" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_make_sample_finds_a_run_id_in_set_results_dir_or_matrix(tmp_path: Path):
    """RUN=<run id> is looked up in the matrix every command finds: RESULTS_DIR/latest, with SET= honoured
    over the .config's RESULTS_DIR, or MATRIX=."""
    matrix = tmp_path / "results" / "handmade"
    matrix.mkdir(parents=True)
    run, _ = _run_dir(matrix)
    results.point_latest(matrix)
    cfg = write_config(tmp_path / ".config", tmp_path / "elsewhere")
    expected = sample.sample(run, "def ", tokens=8, seed=0)[0]

    for where in (f"SET=RESULTS_DIR='{tmp_path / 'results'}'", f"MATRIX={matrix}"):
        proc = make_run("sample", f"RUN={run.name}", f"KCONFIG_CONFIG={cfg}", "PROMPT=def ", "TOKENS=8", where)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[1:] == expected.splitlines(), where
    without = make_run("sample", f"RUN={run.name}", f"KCONFIG_CONFIG={cfg}")  # the .config's RESULTS_DIR is empty
    assert without.returncode == 2
    assert f"error: {run.name} is not a run directory (no config.json), nor a run of the matrix " in without.stderr
    assert str(tmp_path / "elsewhere" / "latest") in without.stderr


def test_make_sample_refuses_a_checkpoint_that_would_run_code(tmp_path: Path):
    run, _ = _run_dir(tmp_path)
    marker = tmp_path / "ran"
    torch.save({"model": Planted(marker)}, run / results.BEST_CHECKPOINT)
    proc = subprocess.run(
        make_cmd("sample", f"RUN={run}"), env=make_env(), capture_output=True, text=True, timeout=HANG_GUARD_SECONDS
    )
    assert not marker.exists(), "the planted command ran"
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {run / results.BEST_CHECKPOINT} asks to run posix.system when loaded; refused: checkpoints of this "
        "framework hold only tensors and plain values, so this file was not written by it or was tampered with; "
        f"delete it (`rm {run / results.BEST_CHECKPOINT}`) unless you trust where it came from"
    ]


def test_report_shows_each_runs_sample_and_caches_it(tmp_path: Path):
    run, _ = _run_dir(tmp_path, "GPT2_REPORT_SAMPLE_TOKENS=12", "GPT2_REPORT_SAMPLE_PROMPT=def ")
    results.atomic_write_json(run / results.STATUS, {"state": "done"})
    summary = {"status": "done", "metric": "loss", "metric_mode": "min", "best": {"loss": 4.0, "step": 10}}
    results.atomic_write_json(run / results.SUMMARY, summary)
    expected = sample.sample(run, "def ", tokens=12)[0]  # make sample's defaults
    assert update_graphs.main(["--matrix", str(tmp_path)]) == 0
    report = (tmp_path / results.REPORT).read_text()
    assert f"### `{run.name}`\n\n```text\n{expected}\n```" in report
    assert "continues the prompt 'def '" in report
    cached = results.read_json(run / results.SAMPLE)
    assert cached["text"] == expected and cached["request"]["best_step"] == 10

    (run / results.BEST_CHECKPOINT).unlink()  # the cache answers while nothing it depends on changed
    assert update_graphs.main(["--matrix", str(tmp_path)]) == 0
    assert f"```text\n{expected}\n```" in (tmp_path / results.REPORT).read_text()
    results.atomic_write_json(run / results.SUMMARY, {**summary, "best": {"loss": 3.9, "step": 20}})
    assert update_graphs.main(["--matrix", str(tmp_path)]) == 0  # a new best: regenerated, and it is gone
    report = (tmp_path / results.REPORT).read_text()
    assert "(no sample: " in report and "does not exist yet" in report
