"""The memory sampler's benchmark runs both sides end to end and writes its table and CSV; the GPU check's
nvidia-smi reader picks this process's rows out of nvidia-smi's CSV."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from scripts import bench_memory
from scripts.check_gpu_memory import MIB, smi_used_bytes


@pytest.mark.slow
def test_bench_memory_writes_an_overhead_per_pair(tmp_path: Path):
    out = tmp_path / "memory.md"
    assert bench_memory.main(["--epochs", "1", "--pairs", "2", "--samples", "50", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out.with_suffix(".csv"))))
    assert [r["pair"] for r in rows] == ["0", "1"]
    for r in rows:
        sampled, unsampled = float(r["sampled_ms_per_step"]), float(r["unsampled_ms_per_step"])
        assert float(r["overhead"]) == pytest.approx(sampled / unsampled - 1)
        # ms per step x images per second = 1000 x images per step, the same on both sides
        assert sampled * float(r["ours_per_s"]) == pytest.approx(unsampled * float(r["minimal_per_s"]))
    text = out.read_text()
    assert "MEMORY_SAMPLE_MS=1000" in text and "| median |" in text


def test_nvidia_smi_rows_of_this_process_are_summed(tmp_path: Path, monkeypatch):
    me = os.getpid()
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\nprintf '{me + 1}, 999\\n{me}, 300\\n{me}, 45\\n'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert smi_used_bytes(me) == 345 * MIB
    assert smi_used_bytes(me + 2) is None
