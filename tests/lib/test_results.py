"""lib.results: where a command finds its matrix (MATRIX=, else RESULTS_DIR/latest from .config and SET=), and
how a run's files are read (state, final and best values, target sparsity, the runner's outcome)."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import pytest

from lib import config as cfgmod
from lib import results
from lib.errors import UserError
from lib.results import Run, resolve_matrix
from tests.helpers import make_run, write_config


def test_matrix_is_taken_as_typed(tmp_path: Path) -> None:
    place = resolve_matrix(tmp_path / "no.config", [], "some/matrix")
    assert place.path == Path("some/matrix") and not place.latest
    assert place.results_dir == cfgmod.ROOT / "results"


def test_latest_is_under_the_configs_results_dir(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / ".config", tmp_path / "mine")
    place = resolve_matrix(cfg)
    assert place.path == tmp_path / "mine" / "latest" and place.latest
    assert place.config is not None and results.matrix_dir(place.config) == tmp_path / "mine" / "quickstart"


def test_set_results_dir_wins_over_the_config(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / ".config", tmp_path / "mine")
    assert resolve_matrix(cfg, [f"RESULTS_DIR={tmp_path / 'other'}"]).path == tmp_path / "other" / "latest"


def test_a_relative_results_dir_is_under_the_repository_root(tmp_path: Path) -> None:
    assert resolve_matrix(tmp_path / "no.config", ["RESULTS_DIR=elsewhere"]).path == cfgmod.ROOT / "elsewhere/latest"


def test_a_missing_config_means_the_default_results_dir(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    place = resolve_matrix(tmp_path / "no.config")
    assert place.path == cfgmod.ROOT / "results" / "latest" and place.config is None
    assert caplog.text == ""  # nothing to say: no .config is an ordinary state


def test_an_invalid_config_is_noted_and_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / ".config"
    bad.write_text("CONFIG_NO_SUCH_SYMBOL=y\n")
    caplog.set_level(logging.WARNING, logger="lib.results")
    place = resolve_matrix(bad, [f"RESULTS_DIR={tmp_path}"])
    assert place.path == tmp_path / "latest" and place.config is None
    assert f"note: {bad} is not used (" in caplog.text


def test_a_bad_override_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="^override EPOCHS=x: EPOCHS takes an integer"):
        resolve_matrix(tmp_path / "no.config", ["EPOCHS=x"])


def test_point_latest_replaces_the_link(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        results.point_latest(tmp_path / name)
        assert (tmp_path / "latest").resolve() == (tmp_path / name).resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "latest"]


def _run(summary: dict | None = None, status: dict | None = None, ledger: str | None = None, **axes) -> Run:
    config = {"run_id": "r", "axes": {"pruning": "magnitude", "target_sparsity": 0.5, **axes}, "values": {}}
    return Run(Path("r"), config, status or {}, summary, [], ledger)


SUMMARY = {"status": "done", "metric": "accuracy", "final": {"accuracy": 0.9, "loss": 0.3}}


def test_run_state_ledger_then_summary_then_status() -> None:
    assert _run().state == "pending"
    assert _run(status={"state": "running"}).state == "running"
    assert _run(SUMMARY, {"state": "running"}).state == "done"  # a killed process's status loses to the summary
    assert _run(SUMMARY, {"state": "done"}, ledger="running").state == "running"  # the ledger is the record
    failed = _run({"status": "failed", "reason": "loss\nbecame NaN"})
    assert failed.state == "failed" and failed.reason == "loss became NaN"
    assert _run().reason == "no reason recorded"


def test_run_final_best_and_target_sparsity() -> None:
    run = _run({**SUMMARY, "best": {"accuracy": 0.95, "loss": 0.2, "step": 40}})
    assert run.metric == "accuracy" and run.final() == 0.9 and run.final("loss") == 0.3
    assert run.best() == (0.95, 40) and run.best("loss") == (0.2, 40) and run.best("perplexity") == (None, 40)
    assert _run().final() is None and _run().best() == (None, None)
    assert run.target_sparsity == 0.5 and _run(pruning="none").target_sparsity == 0.0


@pytest.mark.parametrize(
    ("returncode", "state", "expected"),
    [
        (0, "done", ("done", None)),
        (130, "interrupted", ("interrupted", "stopped at step 7 by a signal; `make continue` resumes it")),
        (-signal.SIGKILL, "running", ("failed", "killed by signal SIGKILL (out of memory?)")),
        (1, "failed", ("failed", "boom")),
    ],
)
def test_outcome_of_a_finished_process(tmp_path: Path, returncode: int, state: str, expected: tuple) -> None:
    results.atomic_write_json(tmp_path / results.STATUS, {"state": state, "step": 7, "reason": "boom"})
    assert results.outcome(tmp_path, returncode) == expected


def test_load_matrix_lists_ledger_runs_without_a_directory(tmp_path: Path) -> None:
    entry = {"run_id": "a", "config": {"run_id": "a", "axes": {}, "values": {}}, "state": "pending"}
    results.atomic_write_json(tmp_path / results.LEDGER, {"runs": [entry]})
    (run,) = results.load_matrix(tmp_path)
    assert run.run_id == "a" and run.state == "pending" and run.summary is None


def test_make_continue_finds_the_latest_matrix_in_set_results_dir(tmp_path: Path) -> None:
    """A matrix whose runs are all done, under a RESULTS_DIR that only SET= names: continue finds it, has
    nothing to do and says so."""
    matrix = tmp_path / "results" / "handmade"
    matrix.mkdir(parents=True)
    values = {"JOBS": 1, "JOBS_PER_GPU": 1, "DEVICE": "cpu"}
    entry = {"run_id": "r", "config": {"run_id": "r", "axes": {}, "values": values}, "state": "done", "attempts": 1}
    results.atomic_write_json(matrix / results.LEDGER, {"name": "handmade", "runs": [entry]})
    results.point_latest(matrix)
    cfg = write_config(tmp_path / ".config", tmp_path / "elsewhere")

    proc = make_run("continue", f"KCONFIG_CONFIG={cfg}", f"SET=RESULTS_DIR='{tmp_path / 'results'}'")
    assert proc.returncode == 0, proc.stderr
    assert f"continuing {matrix} from its ledger: 1 runs" in proc.stderr
    assert "1 of 1 runs already done" in proc.stderr
    without = make_run("continue", f"KCONFIG_CONFIG={cfg}")  # the .config's RESULTS_DIR has no matrix
    assert without.returncode == 2 and f"error: {tmp_path / 'elsewhere' / 'latest'} has no " in without.stderr
    assert json.loads((matrix / results.LEDGER).read_text())["runs"][0]["state"] == "done"
