"""`make analyze`: co-activation tables, mask comparison of prune outputs and figures of a tiny GPT-2 run; a bad RUN
is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lib.analysis import store
from lib.errors import UserError, run_cli
from scripts import analyze, prune
from tests.scripts.test_prune import SETTINGS, _run_dir


def test_analyze_a_run_with_prune_outputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = _run_dir(tmp_path)
    results_dir = tmp_path / "results"
    common = ["--config", str(tmp_path / "none"), "--set", f"{SETTINGS} RESULTS_DIR={results_dir}"]
    for method in ("wanda", "sparsegpt"):
        assert prune.main([str(run), "--method", method, "--samples", "4", *common]) == 0
    assert prune.main([str(run), "--method", "wanda", "--pattern", "2:4", "--samples", "4", *common]) == 0
    assert analyze.main([str(run), "--samples", "4", *common]) == 0
    out = capsys.readouterr().out
    assert "mask_comparison: 16 rows" in out and f"figures: 14 in {run / 'analysis'}" in out
    for table in ("coactivation_clusters", "coactivation_hamming", "mmm_coherence", "mask_comparison"):
        columns, rows = store.read(results_dir, table)
        assert rows and {r[columns.index("source")] for r in rows} == {run.name}, table
    _, mmm = store.read(results_dir, "mmm_coherence")
    assert len(mmm) == 2 * 4 * 2 * 2  # blocks x projections x block sizes x orderings
    columns, pairs = store.read(results_dir, "mask_comparison")
    labels = {(r[columns.index("method")], r[columns.index("label_a")], r[columns.index("label_b")]) for r in pairs}
    assert labels == {(None, "sparsegpt-0.5", "wanda-0.5"), ("wanda", "wanda-0.5-2of4", "wanda-0.5")}
    names = sorted(p.name for p in (run / "analysis").iterdir())
    assert (
        "spy-layer0-mlp.c_fc.png" in names
        and "clusters-layer0-mlp.c_fc-k8.png" in names
        and "tsne-layer0-mlp.c_fc-k8.png" in names
    )
    assert "hamming-layer0.png" in names and "agreement-sparsegpt-0.5-vs-wanda-0.5.png" in names


def test_bad_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [str(tmp_path / "nowhere"), "--config", str(tmp_path / "none")]
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: analyze.main(argv))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "is not a run directory" in errors[0], err


def test_bad_sparsity_and_samples(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="SPARSITY='x' is not a number"):
        analyze.main(["r", "--sparsity", "x"])
    with pytest.raises(UserError, match="SAMPLES='0' is not a positive integer"):
        analyze.main(["r", "--samples", "0"])
