"""scripts.update_graphs on fake but well-formed run directories: every figure, the report, the errors."""

from __future__ import annotations

import json
import logging
import math
import statistics
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from lib import results
from lib.database import build, query
from lib.results import CONFIG, LEDGER, METRICS, STATUS, SUMMARY
from scripts.update_graphs import main
from tests.helpers import HANG_GUARD_SECONDS, make_run, write_config

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (optimizer, pruning, target sparsity) -> final accuracy of seeds 0 and 1
FINALS = {
    ("adamw", "none", 0.0): (0.98, 0.99),
    ("adamw", "magnitude", 0.5): (0.97, 0.96),
    ("adamw", "magnitude", 0.9): (0.90, 0.88),
    ("sgd", "none", 0.0): (0.975, 0.965),
    ("sgd", "magnitude", 0.5): (0.955, 0.945),
    ("sgd", "magnitude", 0.9): (0.85, 0.87),
}
FAILED_ID = "lenet5-adamw-magnitude-s0.9-seed2"
FAILED_REASON = "loss became NaN at step 40"
PENDING_ID = "lenet5-sgd-magnitude-s0.9-seed2"


def run_name(axes: dict) -> str:
    return "-".join(
        [str(axes["model"]), str(axes["optimizer"]), str(axes["pruning"]), f"s{axes['target_sparsity']}"]
        + [f"{k}{v}" for k, v in axes.items() if k not in ("model", "optimizer", "pruning", "target_sparsity")]
    )


def write_run(
    matrix_dir: Path,
    axes: dict,
    *,
    state: str = "done",
    final: float | None = 0.9,
    metric: str = "accuracy",
    mode: str = "max",
    matrix: str = "quickstart",
    reason: str | None = None,
    steps: int = 100,
) -> str:
    """One run directory as the training loop leaves it; returns its run id."""
    run_id = run_name(axes)
    run = matrix_dir / run_id
    run.mkdir(parents=True)
    values = {"EPOCHS": 2, "MATRIX_DESCRIPTION": "a test matrix"}
    (run / CONFIG).write_text(json.dumps({"run_id": run_id, "matrix": matrix, "axes": axes, "values": values}))
    status = {"state": state, "step": steps if state != "pending" else 0, "total_steps": steps}
    if reason:
        status["reason"] = reason
    (run / STATUS).write_text(json.dumps(status))
    if state == "pending":
        return run_id
    start = 0.5 if mode == "max" else 60.0
    target = final if final is not None else start
    rows = []
    for step in range(10, steps + 1, 10):
        lr = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        rows.append(
            {
                "split": "train",
                "step": step,
                "epoch": step / 50,
                "loss": 2 * math.exp(-step / 30) + 0.05,
                "lr": lr,
                "sparsity": axes["target_sparsity"] * step / steps,
            }
        )
        if step % 20 == 0 or step == steps:
            value = target + (start - target) * math.exp(-step / 25)
            rows.append(
                {
                    "split": "eval",
                    "step": step,
                    "epoch": step / 50,
                    "loss": 1.5 * math.exp(-step / 30),
                    metric: value,
                }
            )
    (run / METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {
        "run_id": run_id,
        **{k: axes.get(k) for k in ("model", "optimizer", "pruning", "target_sparsity", "seed")},
        "axes": axes,
        "status": state,
        "reason": reason,
        "metric": metric,
        "metric_mode": mode,
        "final": None if final is None else {"loss": 0.1, metric: final},  # the metric may be the loss
        "best": None
        if final is None
        else {"loss": 0.09, metric: final + (0.001 if mode == "max" else -0.1), "step": steps - 10},
        "sparsity": axes["target_sparsity"] + 0.0003,
        "train_seconds": 12.3,
        "peak_memory_bytes": 123456789,
        "throughput": 1234.5,
        "steps": steps,
    }
    (run / SUMMARY).write_text(json.dumps(summary))
    return run_id


def axes(model: str, optimizer: str, pruning: str, sparsity: float, seed: int, **extra) -> dict:
    return {
        "model": model,
        "optimizer": optimizer,
        "pruning": pruning,
        "target_sparsity": sparsity,
        "seed": seed,
        **extra,
    }


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """2 optimizers x (dense, magnitude 0.5 / 0.9) x 2 seeds, a failed and a pending run; via latest."""
    results = tmp_path_factory.mktemp("results")
    matrix_dir = results / "quickstart"
    ids = []
    for (optimizer, pruning, sparsity), finals in FINALS.items():
        for seed, final in enumerate(finals):
            ids.append(write_run(matrix_dir, axes("lenet5", optimizer, pruning, sparsity, seed), final=final))
    ids.append(
        write_run(
            matrix_dir,
            axes("lenet5", "adamw", "magnitude", 0.9, 2),
            state="failed",
            final=None,
            reason=FAILED_REASON,
            steps=40,
        )
    )
    ids.append(write_run(matrix_dir, axes("lenet5", "sgd", "magnitude", 0.9, 2), state="pending"))
    assert FAILED_ID in ids and PENDING_ID in ids
    (results / "latest").symlink_to("quickstart")
    assert main(["--results", str(results)]) == 0
    return matrix_dir, ids


def assert_png(path: Path) -> None:
    assert path.is_file(), f"missing {path.name}"
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 10_000
    height, width, _ = matplotlib.image.imread(path).shape
    assert height > 200 and width > 200


def test_every_figure_is_written(quickstart: tuple[Path, list[str]]) -> None:
    matrix_dir, ids = quickstart
    graphs = matrix_dir / "graphs"
    for run_id in ids:
        if run_id == PENDING_ID:
            assert not (graphs / f"curves-{run_id}.png").exists()
        else:
            assert_png(graphs / f"curves-{run_id}.png")
    for name in ("eval-accuracy.png", "train-loss.png", "accuracy-vs-sparsity.png"):
        assert_png(graphs / name)
    assert not list(graphs.glob("accuracy-vs-sparsity-*.png"))


def test_report_lists_runs_failures_and_counts(quickstart: tuple[Path, list[str]]) -> None:
    matrix_dir, ids = quickstart
    report = (matrix_dir / "report.md").read_text()
    assert "> a test matrix" in report  # MATRIX_DESCRIPTION heads the report
    assert report.startswith("# Matrix `quickstart`")
    assert "**14 runs:** 12 done · 1 failed · 0 running · 1 pending" in report
    for run_id in ids:
        assert f"`{run_id}`" in report
    assert f"- `{FAILED_ID}`: {FAILED_REASON}" in report
    for name in (
        "accuracy-vs-sparsity.png",
        "eval-accuracy.png",
        "train-loss.png",
        f"curves-{FAILED_ID}.png",
    ):
        assert f"(graphs/{name})" in report
    # lenet5-adamw-magnitude-s0.5-seed0: final 0.97, best 0.971 at step 90, achieved sparsity 0.5003
    row = next(line for line in report.splitlines() if line.startswith("| `lenet5-adamw-magnitude-s0.5-seed0`"))
    assert row.split(" | ")[1:8] == ["done", "97.00", "97.10 @ 90", "50.03", "12.3", "117.7", "1234.5"]


def test_sparsity_table_is_mean_and_sample_std_over_seeds(quickstart: tuple[Path, list[str]]) -> None:
    matrix_dir, _ = quickstart
    lines = (matrix_dir / "report.md").read_text().splitlines()
    assert "| optimizer | pruning | 0% | 50% | 90% |" in lines

    def cell(optimizer: str, pruning: str, sparsity: float) -> str:
        values = [100 * v for v in FINALS[(optimizer, pruning, sparsity)]]
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"

    # The failed third seed of adamw/magnitude/0.9 stays out: the cell is the mean of seeds 0 and 1 only.
    assert cell("adamw", "magnitude", 0.9) == "89.00 ± 1.41"
    assert f"| adamw | magnitude | — | {cell('adamw', 'magnitude', 0.5)} | 89.00 ± 1.41 |" in lines
    assert f"| adamw | none | {cell('adamw', 'none', 0.0)} | — | — |" in lines
    assert "| sgd | none | 97.00 ± 0.71 | — | — |" in lines


def test_multi_model_matrix_draws_one_figure_per_model(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    matrix_dir = tmp_path / "two-models"
    for seed in (0, 1):
        for model in ("lenet5", "mlp"):
            write_run(matrix_dir, axes(model, "adamw", "none", 0.0, seed, lr=0.01), matrix="two-models")
            write_run(matrix_dir, axes(model, "adamw", "magnitude", 0.5, seed, lr=0.01), matrix="two-models")
        write_run(
            matrix_dir,
            axes("gpt", "adamw", "magnitude", 0.5, seed, lr=0.01),
            metric="perplexity",
            mode="min",
            final=(23.456, 25.0)[seed],
            matrix="two-models",
        )
        write_run(
            matrix_dir,
            axes("gpt", "adamw", "magnitude", 0.5, seed, lr=0.1),
            metric="perplexity",
            mode="min",
            final=30.0,
            matrix="two-models",
        )
    pending = write_run(matrix_dir, axes("mlp", "sgd", "none", 0.0, 0, lr=0.01), state="pending")
    caplog.set_level(logging.INFO, logger="scripts.update_graphs")
    assert main(["--matrix", str(matrix_dir)]) == 0

    graphs = matrix_dir / "graphs"
    for name in (
        "accuracy-vs-sparsity-lenet5",
        "accuracy-vs-sparsity-mlp",
        "perplexity-vs-sparsity-gpt",
        "eval-accuracy",
        "eval-perplexity",
        "train-loss",
    ):
        assert_png(graphs / f"{name}.png")
    assert not (graphs / "accuracy-vs-sparsity.png").exists()
    assert f"{pending}: no metrics yet, no curves drawn" in caplog.text
    lines = (matrix_dir / "report.md").read_text().splitlines()
    # lr varies only within gpt, so it joins gpt's lines; perplexity (mode "min") keeps 4 significant digits.
    assert "| optimizer | pruning | lr | 50% |" in lines
    assert "| adamw | magnitude | 0.01 | 24.23 ± 1.092 |" in lines
    assert "| adamw | magnitude | 0.1 | 30.00 ± 0.000 |" in lines


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scripts.update_graphs", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
    )


@pytest.mark.parametrize("kind", ["missing-latest", "missing-matrix", "empty-matrix"])
def test_user_errors_are_one_line_and_exit_2(tmp_path: Path, kind: str) -> None:
    if kind == "missing-latest":
        proc = run_script("--results", str(tmp_path))
        looked_for = str(tmp_path / "latest")
    elif kind == "missing-matrix":
        proc = run_script("--matrix", str(tmp_path / "nope"))
        looked_for = str(tmp_path / "nope")
    else:
        proc = run_script("--matrix", str(tmp_path))
        looked_for = str(tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert looked_for in lines[0] and "make" in lines[0] and "MATRIX=" in lines[0]


def eval_value(final: float, step: int) -> float:
    """The eval metric write_run logs at ``step`` for a "min" run ending at ``final``."""
    return final + (60.0 - final) * math.exp(-step / 25)


def test_banded_report_has_a_table_per_width_and_the_change_vs_baseline(tmp_path: Path) -> None:
    # (fc1 width, fc2 width) -> final validation loss of seeds 0 and 1; (0, 0) is the dense baseline
    finals = {
        (0, 0): (3.0, 3.2),
        (512, 0): (3.4, 3.42),
        (0, 512): (3.255, 3.255),
        (512, 512): (3.7, 3.74),
        (1024, 0): (3.1, 3.1),
        (512, 256): (3.41, 3.41),  # an off-diagonal pair of the full grid
    }
    matrix_dir = tmp_path / "banded"
    for (fc1, fc2), values in finals.items():
        for seed, final in enumerate(values):
            pruning = "banded" if fc1 or fc2 else "none"
            bands = {"fc1_band": fc1, "fc2_band": fc2} if pruning == "banded" else {"fc1_band": None, "fc2_band": None}
            run_axes = axes("gpt2", "adamw", pruning, 0.0, seed, **bands)
            write_run(matrix_dir, run_axes, final=final, metric="loss", mode="min", matrix="banded")
    assert main(["--matrix", str(matrix_dir)]) == 0
    report = (matrix_dir / "report.md").read_text()
    lines = report.splitlines()

    def row_at(step: int, pairs: list[tuple[int, int]]) -> str:
        means = [statistics.mean(eval_value(f, step) for f in finals[pair]) for pair in pairs]
        cells = [f"**{m:#.4g}**" if m == min(means) else f"{m:#.4g}" for m in means]  # the lowest loss in bold
        return f"| {step} | " + " | ".join(cells) + " |"

    start = lines.index("### Bandwidth 512: eval loss")
    assert lines[start + 2] == "| Step | Baseline | FC1-512 | FC2-512 | Both-512 |"
    assert lines[start + 4 : start + 9] == [
        row_at(step, [(0, 0), (512, 0), (0, 512), (512, 512)]) for step in (20, 40, 60, 80, 100)
    ]
    assert lines[start + 8] == "| 100 | **4.142** | 4.446 | 4.294 | 4.751 |"  # the baseline is best
    start = lines.index("### Bandwidth 1024: eval loss")  # FC1 only at this width
    assert lines[start + 2] == "| Step | Baseline | FC1-1024 |"
    assert "### Bandwidth 256: eval loss" not in lines  # only in an off-diagonal pair: final table only

    start = lines.index("### Final eval loss")
    assert lines[start + 2] == (
        "| run | FC1 width | FC2 width | sparsity (%) | FC1 density (%) | parameters | nonzero | final loss "
        "| Δ vs baseline |"
    )
    assert lines[start + 4 : start + 10] == [
        "| baseline | dense | dense | 0.03 | — | — | — | 3.100 | — |",
        "| FC1 | 1024 | dense | 0.03 | — | — | — | 3.100 | +0.00% |",
        "| FC1 | 512 | dense | 0.03 | — | — | — | 3.410 | +10.00% |",
        "| FC2 | dense | 512 | 0.03 | — | — | — | 3.255 | +5.00% |",
        "| FC1+FC2 | 512 | 512 | 0.03 | — | — | — | 3.720 | +20.00% |",
        "| FC1 512 / FC2 256 | 512 | 256 | 0.03 | — | — | — | 3.410 | +10.00% |",
    ]
    start = lines.index("### Change of final eval loss vs baseline: layer × bandwidth")
    assert lines[start + 2 : start + 7] == [
        "| layer | bandwidth 1024 | bandwidth 512 | bandwidth 256 |",
        "|---|---|---|---|",
        "| FC1 | +0.0000 | +0.3100 | — |",
        "| FC2 | — | +0.1550 | — |",
        "| Both | — | +0.6200 | — |",
    ]


GPT2_SMALL_VALUES = {
    "GPT2_SIZE": "small",
    "ADAMW_LR": 0.0003,
    "ADAM_BETA1": 0.9,
    "ADAM_BETA2": 0.999,
    "ADAM_EPS": 1e-08,
    "ADAMW_WEIGHT_DECAY": 0.0,
    "BATCH_SIZE": 16,
    "GPT2_GRAD_ACCUM": 1,
    "GPT2_MAX_ITERS": 3000,
    "GPT2_EVAL_INTERVAL": 500,
    "EVAL_AT_START": True,
    "PRECISION": "fp32",
    "LR_SCHEDULE": "constant",
    "LR_WARMUP_STEPS": 0,
    "GPT2_DATASET": "tinystories",
}


def test_banded_fc1_report_reads_density_parameters_configuration_and_samples(tmp_path: Path) -> None:
    matrix_dir = tmp_path / "fc1"
    fc1_sparsity = 0.5621  # per FC1 layer, as summary.json's layer_sparsity has it
    for fc1, final in ((0, 2.0), (1024, 2.1)):
        pruning = "banded" if fc1 else "none"
        run_axes = axes("gpt2", "adamw", pruning, 0.0, 0, fc1_band=fc1 or None, fc2_band=0 if fc1 else None)
        run = matrix_dir / write_run(matrix_dir, run_axes, final=final, metric="loss", mode="min", matrix="fc1")
        config = json.loads((run / CONFIG).read_text())
        (run / CONFIG).write_text(json.dumps({**config, "values": {**config["values"], **GPT2_SMALL_VALUES}}))
        summary = json.loads((run / SUMMARY).read_text())
        layers = {f"transformer.h.{i}.mlp.c_fc": fc1_sparsity for i in range(8)} if fc1 else {}
        nonzero = 51_237_888 - (4_714_688 if fc1 else 0)
        summary |= {"layer_sparsity": layers, "parameters": 51_237_888, "nonzero_parameters": nonzero}
        (run / SUMMARY).write_text(json.dumps(summary))
        rows = [{"step": 2, "prompt": "Once", "text": "Once a"}, {"step": 1, "prompt": "Once", "text": "Once"}]
        rows.append({"step": 2, "prompt": "Once", "text": "Once upon"})  # step 2 again after a resume: last wins
        (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["--matrix", str(matrix_dir)]) == 0
    lines = (matrix_dir / "report.md").read_text().splitlines()

    start = lines.index("### Final eval loss")
    assert lines[start + 4 : start + 6] == [
        "| baseline | dense | dense | 0.03 | 100.0 | 51,237,888 | 51,237,888 | 2.000 | — |",
        "| FC1 | 1024 | dense | 0.03 | 43.8 | 51,237,888 | 46,523,200 | 2.100 | +5.00% |",
    ]
    start = lines.index("### Model and training configuration")
    table = dict(line.strip("| ").split(" | ") for line in lines[start + 4 : start + 21])
    assert table == {
        "n_layer": "8",
        "n_embd": "512",
        "n_head": "8",
        "block size": "512",
        "parameters": "51,237,888",
        "optimizer": "adamw",
        "learning rate": "0.0003",
        "betas": "(0.9, 0.999)",
        "eps": "1e-08",
        "weight decay": "0.0",
        "batch (sequences × accumulation × tokens)": "16 × 1 × 512",
        "steps": "3000",
        "validation every": "500",
        "validation at step 0": "yes",
        "precision": "fp32",
        "schedule": "constant, warm-up 0",
        "data": "tinystories",
    }
    start = lines.index("### FC1 density by bandwidth")
    assert lines[start + 2 : start + 7] == [
        "| bandwidth | FC1 density, formula (2048 × 512) (%) | published (%) |",
        "|---|---|---|",
        "| 1024 | 43.8 | 43.8 |",
        "| 512 | 23.5 | 21.9 |",
        "| 256 | 12.2 | 10.9 |",
    ]
    assert lines[start + 8].startswith("The published table lists 21.9% / 10.9%")

    start = lines.index("## Samples during training")
    run_id = run_name(axes("gpt2", "adamw", "banded", 0.0, 0, fc1_band=1024, fc2_band=0))
    at = lines.index(f"### `{run_id}`", start)
    assert lines[at + 2 : at + 13] == [
        "Step 1:",
        "",
        "```text",
        "Once",
        "```",
        "",
        "Step 2:",
        "",
        "```text",
        "Once upon",
        "```",
    ]


def test_no_banded_section_without_banded_runs(quickstart: tuple[Path, list[str]]) -> None:
    matrix_dir, _ = quickstart
    assert "## Banded MLP" not in (matrix_dir / "report.md").read_text()


def write_ledger(matrix_dir: Path, runs: list[tuple[dict, str]]) -> None:
    """``matrix.json`` as the runner keeps it: every run's config and state, whether it has a directory or not."""
    entries = []
    for run_axes, state in runs:
        run_id = run_name(run_axes)
        config = {"run_id": run_id, "matrix": "ledger", "axes": run_axes, "values": {"EPOCHS": 2}}
        if (matrix_dir / run_id / CONFIG).is_file():
            config = json.loads((matrix_dir / run_id / CONFIG).read_text())
        entries.append({"run_id": config["run_id"], "config": config, "state": state, "attempts": 0, "reason": None})
    matrix_dir.mkdir(parents=True, exist_ok=True)
    (matrix_dir / LEDGER).write_text(json.dumps({"name": matrix_dir.name, "created": 0.0, "runs": entries}))


def test_counts_come_from_the_ledger_including_runs_without_a_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    matrix_dir = tmp_path / "ledger"
    done = axes("lenet5", "adamw", "magnitude", 0.5, 0)
    write_run(matrix_dir, done, final=0.97, matrix="ledger")
    # Failed once, now retried: its directory still holds the failed attempt's summary, the ledger says running.
    retried = axes("lenet5", "adamw", "magnitude", 0.9, 0)
    retried_id = write_run(matrix_dir, retried, state="failed", final=None, reason="NaN", matrix="ledger")
    (matrix_dir / retried_id / STATUS).write_text(json.dumps({"state": "running", "step": 30, "total_steps": 100}))
    pending = [axes("lenet5", "sgd", "magnitude", s, 0) for s in (0.5, 0.9)]
    pending += [axes("lenet5", "sgd", "none", 0.0, seed) for seed in (0, 1)]
    write_ledger(matrix_dir, [(done, "done"), (retried, "running"), *((a, "pending") for a in pending)])
    caplog.set_level(logging.INFO, logger="scripts.update_graphs")

    assert main(["--matrix", str(matrix_dir)]) == 0

    counts = "1 done · 0 failed · 1 running · 4 pending"
    assert f"matrix ledger: 6 runs ({counts}) in {matrix_dir}" in caplog.text
    lines = (matrix_dir / "report.md").read_text().splitlines()
    assert f"**6 runs:** {counts}" in lines
    status = {line.split(" | ")[0].strip("|` "): line.split(" | ")[1] for line in lines if line.startswith("| `")}
    assert status == {
        "lenet5-adamw-magnitude-s0.5-seed0": "done",
        retried_id: "running (30/100)",
        **{run_name(a): "pending" for a in pending},
    }
    assert "## Failed runs\n\nNone." in "\n".join(lines)


def test_make_update_graphs_finds_the_latest_matrix_where_results_live(tmp_path: Path) -> None:
    """RESULTS_DIR from the .config, or from SET= over it: `make update-graphs` looks for `latest` there."""
    results_dir = tmp_path / "results"
    write_run(results_dir / "handmade", axes("lenet5", "adamw", "none", 0.0, 0), matrix="handmade")
    (results_dir / "latest").symlink_to("handmade")
    report = results_dir / "handmade" / "report.md"
    elsewhere = write_config(tmp_path / "elsewhere.config", tmp_path / "elsewhere")

    proc = make_run("update-graphs", f"KCONFIG_CONFIG={elsewhere}", f"SET=RESULTS_DIR='{results_dir}'")
    assert proc.returncode == 0, proc.stderr
    assert report.read_text().startswith("# Matrix `handmade`")
    report.unlink()
    proc = make_run("update-graphs", f"KCONFIG_CONFIG={write_config(tmp_path / '.config', results_dir)}")
    assert proc.returncode == 0, proc.stderr
    assert report.is_file()

    proc = make_run("update-graphs", f"KCONFIG_CONFIG={elsewhere}")
    assert proc.returncode == 2
    assert [line for line in proc.stderr.splitlines() if not line.startswith("make: ")] == [
        f"error: no matrix at {tmp_path / 'elsewhere' / 'latest'} (the link to the newest matrix): run `make` first, "
        f"or pass MATRIX=<dir> (--matrix <dir>) naming a matrix directory under {tmp_path / 'elsewhere'}/"
    ]


def lm_axes(seed: int) -> dict:
    return axes("gpt2", "adamw", "none", 0.0, seed, variant="v")


def _oneshot_result(run_dir: Path, method: str, target: float, before: float, after: float, pattern=None) -> None:
    out = run_dir / results.ONESHOT_DIR / f"{method}-{pattern.replace(':', 'of') if pattern else target}"
    out.mkdir(parents=True)
    results.atomic_write_json(
        out / results.PRUNE_JSON,
        {"method": method, "target": target, "pattern": pattern, "sparsity": target, "seconds": 1.5,
         "perplexity": {"before": before, "after": after},
         "calibration": {"corpus": "pydoc", "samples": 4, "seqlen": 32, "seed": 0}},
    )  # fmt: skip


def test_one_shot_results_make_a_report_section_and_a_database_table(tmp_path: Path) -> None:
    """Two seeds of a dense GPT-2 run, each pruned by magnitude at 0.5 and 0.7 and by Wanda 2:4: the section's
    table holds the means over seeds (hand-computed), the figure is drawn, the oneshot table holds every row."""
    matrix_dir = tmp_path / "results" / "oneshot-m"
    ids = [
        # an axis named like a column of the oneshot table: the table keeps the run's axes in `runs` (a join)
        write_run(matrix_dir, lm_axes(seed), metric="perplexity", mode="min", final=10.0)
        for seed in (0, 1)
    ]
    for run_id, before, shift in zip(ids, (10.0, 12.0), (0.0, 2.0), strict=True):
        _oneshot_result(matrix_dir / run_id, "magnitude", 0.5, before, 11.0 + shift)
        _oneshot_result(matrix_dir / run_id, "magnitude", 0.7, before, 15.0 + shift)
        _oneshot_result(matrix_dir / run_id, "wanda", 0.5, before, 10.5 + shift, pattern="2:4")
    assert main(["--matrix", str(matrix_dir)]) == 0
    assert_png(matrix_dir / "graphs" / "oneshot.png")
    report = (matrix_dir / "report.md").read_text()
    section = report[report.index("## One-shot pruning") :].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "trained as" not in line]
    # means over the two seeds: before (10 + 12) / 2 = 11; after 12, 16 and 11.5; changes +9.1%, +45.5%, +4.5%
    assert [r.split(" | ")[1:] for r in rows] == [
        ["magnitude", "0.5", "0.500", "11.00", "12.00", "+9.1%", "2 |"],
        ["magnitude", "0.7", "0.700", "11.00", "16.00", "+45.5%", "2 |"],
        ["wanda 2:4", "0.5", "0.500", "11.00", "11.50", "+4.5%", "2 |"],
    ]
    build(tmp_path / "results")
    sql = "select run_id, method, pattern, target, perplexity_change from oneshot order by all"
    columns, table = query(tmp_path / "results", sql)
    assert columns == ["run_id", "method", "pattern", "target", "perplexity_change"]
    assert len(table) == 6 and table[0][1:] == ("magnitude", None, 0.5, pytest.approx(0.1))
    assert table[-1][1:] == ("wanda", "2:4", 0.5, pytest.approx(12.5 / 12 - 1))


def test_make_analyze_results_make_a_report_section(tmp_path: Path) -> None:
    """Analysis rows of this matrix's run (and of another source, left out) become the "Sparsity analysis"
    section: the mask agreement means over Linears, the MMM coherence table and figure, the separation per k
    (hand-computed), and the run's agreement heatmaps linked."""
    from lib.analysis import store

    results_dir = tmp_path / "results"
    matrix_dir = results_dir / "analysis-m"
    run_id = write_run(matrix_dir, lm_axes(0), metric="perplexity", mode="min", final=10.0)
    pair = {"method": None, "label_a": "sparsegpt-0.5", "label_b": "wanda-0.5", "indices": "0-0"}
    agree = [(0, "fc1", 0.5, 0.25, 0.8), (0, "fc2", 0.7, 0.15, 0.9), (1, "fc1", 0.6, 0.2, float("nan"))]
    rows = [
        {**pair, "layer": layer, "component": c, "jaccard": j, "hamming_frac": h, "cosine": cos}
        for layer, c, j, h, cos in agree
    ]
    store.write(results_dir, "mask_comparison", run_id, rows)
    store.write(results_dir, "mask_comparison", "someone-else", rows[:1])
    mmm = [("index", 4, 0.5), ("index", 4, 0.2), ("hamming", 4, 0.6), ("hamming", 4, 0.4), ("index", 16, 0.1)]
    store.write(
        results_dir, "mmm_coherence", run_id,
        [{"layer": i, "component": "fc1", "ordering": o, "block_size": b, "coherence": c}
         for i, (o, b, c) in enumerate(mmm)],
    )  # fmt: skip
    clusters = [(0, "fc1", 4, 2.0), (0, "fc1", 4, 2.0), (0, "fc2", 4, 3.0), (0, "fc1", 8, 5.0)]  # a row per cluster
    store.write(
        results_dir, "coactivation_clusters", run_id,
        [{"layer": i, "component": c, "k": k, "separation": s} for i, c, k, s in clusters],
    )  # fmt: skip
    store.write(
        results_dir, "mask_clusters", run_id,
        [{"label": "wanda-0.5", "layer": i, "component": "fc1", "k": 4, "separation": v}
         for i, v in ((0, 1.0), (1, 2.0))],
    )  # fmt: skip
    (matrix_dir / run_id / "analysis").mkdir()
    heatmap = matrix_dir / run_id / "analysis" / "agreement-sparsegpt-0.5-vs-wanda-0.5.png"
    matplotlib.image.imsave(heatmap, [[0.0, 1.0], [1.0, 0.0]])
    assert main(["--matrix", str(matrix_dir)]) == 0
    assert_png(matrix_dir / "graphs" / "analysis-mmm.png")
    report = (matrix_dir / "report.md").read_text()
    section = report[report.index("## Sparsity analysis") :].split("\n## ")[0]
    # agreement: Jaccard (0.5 + 0.7 + 0.6) / 3, Hamming (0.25 + 0.15 + 0.2) / 3, cosine where defined (0.8 + 0.9) / 2
    assert f"| {run_id} | sparsegpt-0.5 | wanda-0.5 |  | 3 | 0.600 | 0.200 | 0.850 |" in section
    assert not any("someone-else" in line for line in section.splitlines())
    assert "| hamming | 4 | 2 | 0.500 | 2 of 2 |" in section  # 0.6 and 0.4, both above 0.3
    assert "| index | 4 | 2 | 0.350 | 1 of 2 |" in section and "| index | 16 | 1 | 0.100 | 0 of 1 |" in section
    assert "| 4 | 2 | 2.50 |" in section and "| 8 | 1 | 5.00 |" in section  # per projection, then the mean
    assert f"| {run_id} | wanda-0.5 | 1.50 |" in section  # mask clusters: (1 + 2) / 2 at k = 4
    assert f"]({run_id}/analysis/{heatmap.name})" in section
    assert "data:image/png;base64," in (matrix_dir / "report.html").read_text()
