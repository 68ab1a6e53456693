"""scripts.bench_variants: every variant of a defconfig's matrix timed against plain GPT-2 of the same shape."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lib import config as cfgmod
from lib.errors import UserError
from scripts import bench_variants

TINY = "GPT2_SIZE=custom GPT2_N_LAYER=1 GPT2_N_EMBD=32 GPT2_N_HEAD=2 GPT2_BLOCK_SIZE=32 BATCH_SIZE=2"


def test_each_variant_of_the_ablation_gets_a_speed_ratio_against_plain(tmp_path: Path) -> None:
    out = tmp_path / "variants.md"
    argv = ["--set", TINY, "--steps", "1", "--pairs", "1", "--out", str(out)]
    assert bench_variants.main(argv) == 0
    rows = list(csv.DictReader(open(out.with_suffix(".csv"))))
    assert [r["variant"] for r in rows] == ["rmlp", "raexact", "raexact-rmlp", "ralowrank", "ralowrank-rmlp"]
    for r in rows:
        assert float(r["speed_ratio"]) > 0 and float(r["ratio_min"]) <= float(r["speed_ratio"]) <= float(r["ratio_max"])
        assert int(r["params"]) > int(r["plain_params"])  # each adds its mixing weights
    exact = next(r for r in rows if r["variant"] == "raexact")
    assert int(exact["flops_per_token"]) > int(exact["plain_flops_per_token"])  # the folded scores
    text = out.read_text()
    assert "--steps 1 --pairs 1" in text and text.count("×** |") == 5


def test_a_matrix_without_plain_gpt2_is_one_error() -> None:
    cfg = cfgmod.load(cfgmod.DEFCONFIGS / "gpt2-reciprocal-ablation", ["ATTN_RECIPROCAL_NONE=n"])
    with pytest.raises(UserError, match="plans no plain GPT-2 run"):
        bench_variants.variants(cfg)
