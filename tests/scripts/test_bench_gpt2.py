"""The GPT-2 throughput benchmark runs both loops end to end and writes its table and CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from scripts import bench_gpt2


@pytest.mark.slow
def test_bench_gpt2_writes_a_ratio_per_pair(tmp_path: Path):
    out = tmp_path / "gpt2.md"
    assert bench_gpt2.main(["--steps", "12", "--pairs", "1", "--device", "cpu", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out.with_suffix(".csv"))))
    assert [r["pair"] for r in rows] == ["0"]
    ours, minimal = float(rows[0]["ours_per_s"]), float(rows[0]["minimal_per_s"])
    assert ours > 0 and minimal > 0 and float(rows[0]["ratio"]) == pytest.approx(ours / minimal)
    assert "| median |" in out.read_text() and "6.6 MFLOP" in out.read_text()  # tiny: 6N + 12LCT per token
