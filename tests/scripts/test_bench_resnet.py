"""The ResNet throughput benchmark runs both loops end to end and writes its table and CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from scripts import bench_resnet


@pytest.mark.slow
def test_bench_resnet_writes_a_ratio_per_pair(tmp_path: Path):
    out = tmp_path / "resnet.md"
    args = ["--images", "64", "--batch", "32", "--epochs", "1", "--pairs", "1", "--device", "cpu", "--out", str(out)]
    assert bench_resnet.main(args) == 0
    rows = list(csv.DictReader(open(out.with_suffix(".csv"))))
    assert [r["pair"] for r in rows] == ["0"]
    for r in rows:
        ours, minimal = float(r["ours_per_s"]), float(r["minimal_per_s"])
        assert ours > 0 and minimal > 0 and float(r["ratio"]) == pytest.approx(ours / minimal)
    text = out.read_text()
    assert "| median |" in text and "3.33 GFLOP" in text  # ResNet-18 CIFAR: 3 x 1.11 GFLOP per image
