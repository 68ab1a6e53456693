"""`make analyze`: the one-shot grid, co-activation tables, mask comparisons and figures of a tiny GPT-2 run; a bad
RUN, SPARSITY, SAMPLES or BLOCKS is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lib.analysis import store
from lib.errors import UserError, run_cli
from scripts import analyze, prune
from tests.scripts.test_prune import SETTINGS, _run_dir

GRID = "ONESHOT_WANDA=y ONESHOT_SPARSEGPT=y ONESHOT_SPARSITIES='0.5 0.7' ONESHOT_PATTERNS=2:4 ONESHOT_SAMPLES=4"


def test_analyze_prunes_the_grid_then_compares_and_clusters(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """make analyze on a tiny GPT-2 run: it prunes the one-shot grid's missing results (wanda-0.5 was left by
    make prune), writes every table, compares methods, sparsities and N:M against unstructured, and draws the
    figures; a second run prunes nothing new."""
    run = _run_dir(tmp_path)
    results_dir = tmp_path / "results"
    common = ["--config", str(tmp_path / "none"), "--set", f"{SETTINGS} RESULTS_DIR={results_dir} {GRID}"]
    assert prune.main([str(run), "--method", "wanda", "--samples", "4", *common]) == 0
    capsys.readouterr()
    assert analyze.main([str(run), "--samples", "4", "--blocks", "4,8,16", *common]) == 0
    out = capsys.readouterr().out
    new = sorted(line.split()[2] + " " + line.split()[3] for line in out.splitlines() if line.startswith("one-shot:"))
    assert new == ["sparsegpt 0.5:", "sparsegpt 0.7:", "sparsegpt 2:4:", "wanda 0.7:", "wanda 2:4:"]
    pairs = 7  # 3 targets x (sparsegpt vs wanda) + 2 methods x (0.5 vs 0.7) + 2 methods x (2:4 vs 0.5)
    assert f"mask_comparison: {pairs * 8} rows" in out  # 8 Linears: 2 blocks x 4
    assert f"mask_features: {pairs * 2 * (96 + 32 + 128 + 32)} rows" in out  # output features of a block's Linears
    # spy, clusters, t-SNE per Linear of block 0; Hamming; an agreement heatmap per pair; a mask-cluster one per result
    assert f"figures: {4 * 3 + 1 + pairs + 6} in {run / 'analysis'}" in out
    assert f"mask_clusters: {6 * 8 * 3} rows" in out  # 6 results x 8 Linears x k = 4, 8, 16
    for table in store.TABLES:
        columns, rows = store.read(results_dir, table)
        assert rows and {r[columns.index("source")] for r in rows} == {run.name}, table
    _, mmm = store.read(results_dir, "mmm_coherence")
    assert len(mmm) == 2 * 4 * 3 * 2  # blocks x projections x block sizes x orderings
    columns, rows = store.read(results_dir, "mask_comparison")
    labels = {(r[columns.index("method")], r[columns.index("label_a")], r[columns.index("label_b")]) for r in rows}
    assert labels == {
        (None, "sparsegpt-0.5", "wanda-0.5"),
        (None, "sparsegpt-0.5-2of4", "wanda-0.5-2of4"),
        (None, "sparsegpt-0.7", "wanda-0.7"),
        ("sparsegpt", "sparsegpt-0.5", "sparsegpt-0.7"),
        ("wanda", "wanda-0.5", "wanda-0.7"),
        ("sparsegpt", "sparsegpt-0.5-2of4", "sparsegpt-0.5"),
        ("wanda", "wanda-0.5-2of4", "wanda-0.5"),
    }
    columns, rows = store.read(results_dir, "mask_features")
    density = columns.index("density_a")
    fc = [r for r in rows if r[columns.index("label_a")] == "wanda-0.5" and r[columns.index("component")] == "mlp.c_fc"]
    assert len(fc) == 2 * 128 and all(r[density] == 0.5 for r in fc)  # Wanda prunes half of every output row
    names = sorted(p.name for p in (run / "analysis").iterdir())
    assert (
        "spy-layer0-mlp.c_fc.png" in names
        and "clusters-layer0-mlp.c_fc-k8.png" in names
        and "tsne-layer0-mlp.c_fc-k8.png" in names
    )
    assert "hamming-layer0.png" in names and "agreement-sparsegpt-0.5-vs-wanda-0.5.png" in names
    assert analyze.main([str(run), "--samples", "4", *common]) == 0
    assert "one-shot:" not in capsys.readouterr().out  # everything of the grid is there


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
    with pytest.raises(UserError, match="BLOCKS='4,x' is not a list of distinct positive integers"):
        analyze.main(["r", "--blocks", "4,x"])


def test_mask_clusters_find_structure_that_a_random_mask_lacks(tmp_path: Path) -> None:
    """Input features (columns) that keep the same outputs (two groups, each column with one extra output of its
    own) separate into clusters; a random mask of the same density does not. The reference is the densest
    column."""
    import torch

    structured = torch.zeros(32, 40, dtype=torch.bool)  # (in, out) here; saved transposed, as a weight is
    for r in range(32):
        structured[r, (r // 16) * 16 : (r // 16) * 16 + 16] = True
        structured[r, 32 + r % 8] = True
    structured[5, 39] = True  # the densest input feature: the reference
    random = torch.rand(32, 40, generator=torch.Generator().manual_seed(0)) < structured.float().mean()
    for name, mask in (("structured-0.5", structured), ("random-0.5", random)):
        (tmp_path / name).mkdir()
        weight_mask = mask.t().contiguous()  # (out, in)
        torch.save({"mask": weight_mask, "weight": weight_mask.float()}, tmp_path / name / "layer0-fc1-0-0-0.5.pt")
    rows = {name: analyze.mask_clusters(tmp_path / name, seed=0) for name in ("structured-0.5", "random-0.5")}
    assert [r["k"] for r in rows["structured-0.5"]] == [4, 8, 16]
    assert rows["structured-0.5"][0]["reference"] == 5 and rows["structured-0.5"][0]["features"] == 32
    assert {r["label"] for r in rows["random-0.5"]} == {"random-0.5"}
    for k in range(3):
        assert rows["structured-0.5"][k]["separation"] > 2 * rows["random-0.5"][k]["separation"]
