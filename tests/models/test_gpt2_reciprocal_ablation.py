"""The gpt2-reciprocal-ablation defconfig (issue 17's fair protocol): every variant the same tokens and schedule
annealed to the end, three seeds each; end to end with a few steps on the embedded corpus, to the report's
mean ± std table with the noise flag."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from lib import config as cfgmod
from lib.matrix import expand
from lib.optimizers import OPTIMIZERS
from lib.optimizers.schedules import LRSchedule
from models.gpt2 import budget
from scripts.update_graphs import main as update_graphs
from tests.helpers import runner, write_config

DEFCONFIG = "gpt2-reciprocal-ablation"


def test_every_variant_gets_the_same_tokens_schedule_and_three_seeds() -> None:
    cfg = cfgmod.load(cfgmod.DEFCONFIGS / DEFCONFIG)
    runs = expand(cfg).runs
    variants = {(r.axes["reciprocal"], r.axes["rmlp"]) for r in runs}
    assert variants == {(ra, m) for ra in ("none", "exact", "lowrank") for m in ("none", "on")}
    for v in variants:
        assert sorted(r.axes["seed"] for r in runs if (r.axes["reciprocal"], r.axes["rmlp"]) == v) == [0, 1, 2]
    assert len({budget(r.cfg) for r in runs}) == 1  # the same steps and tokens for every run
    setup = OPTIMIZERS["adamw"](nn.Linear(4, 4), cfg)
    schedule = LRSchedule(setup.optimizer, cfg["GPT2_MAX_ITERS"], cfg, setup.schedule)
    for _ in range(cfg["GPT2_MAX_ITERS"]):
        setup.optimizer.step()
        schedule.step()
    last = setup.optimizer.param_groups[0]["lr"]
    assert abs(last - cfg["ADAMW_LR"] * cfg["LR_MIN_RATIO"]) < 1e-9  # annealed to the end of the run


def test_the_variant_axes_matrix_moves_one_axis_at_a_time_on_the_same_tokens() -> None:
    runs = expand(cfgmod.load(cfgmod.DEFCONFIGS / "gpt2-variant-axes")).runs
    cells = {(r.axes["mlp_ratio"], r.axes["mla"], r.axes["kv_keep"]) for r in runs}
    assert cells == {(2.0, 0, 1.0), (2.5, 0, 1.0), (2.0, 64, 1.0), (2.0, 0, 0.5)}
    for cell in cells:
        seeds = [r.axes["seed"] for r in runs if (r.axes["mlp_ratio"], r.axes["mla"], r.axes["kv_keep"]) == cell]
        assert sorted(seeds) == [0, 1, 2]
    assert len({budget(r.cfg) for r in runs}) == 1


def test_the_ablation_runs_end_to_end_to_its_table(tmp_path: Path) -> None:
    small = ["GPT2_SIZE=custom", "GPT2_N_LAYER=1", "GPT2_N_EMBD=32", "GPT2_N_HEAD=2", "GPT2_BLOCK_SIZE=32"]
    small += ["GPT2_MAX_ITERS=6", "GPT2_EVAL_INTERVAL=3", "GPT2_EVAL_BATCHES=2", "BATCH_SIZE=4", "LR_WARMUP_STEPS=2"]
    small += ["ATTN_RECIPROCAL_EXACT=n", "MLP_RECIPROCAL_ON=n", "JOBS=2", "GPT2_REPORT_SAMPLE_TOKENS=8"]
    small += [f"DATA_DIR={tmp_path / 'data'}"]
    config = write_config(tmp_path / ".config", tmp_path / "results", *small, defconfig=DEFCONFIG)
    proc = runner("run", "--config", str(config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    matrix = tmp_path / "results" / "gpt2-reciprocal-ablation"
    assert update_graphs(["--matrix", str(matrix)]) == 0
    report = (matrix / "report.md").read_text()
    section = report[report.index("## GPT-2 variants") :].split("\n## ")[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and "variant" not in line]
    assert [r[0].lstrip("| ") for r in rows] == ["plain", "RA lowrank"]  # 6 runs: plain and one variant
    for row in rows:
        mean, _, std = row[1].partition(" ± ")
        assert 1.0 < float(mean) < 6.0 and float(std) >= 0 and row[2] == "3"  # three seeds each
        assert row[3].endswith("M") and row[4].endswith("M")
    assert rows[0][-1] == " |" and all(r[-1].strip(" |") for r in rows[1:])  # a Δ for each variant but plain
