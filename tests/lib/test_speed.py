"""The "Speed" knobs: bf16 autocast, channels_last and torch.compile reach the shared loop, and a run with all
three on still learns and checkpoints the plain module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from lib import checkpoint
from lib.config import Config
from lib.training import PRECISIONS, Speed
from tests.helpers import runner, write_config


def test_every_precision_choice_sets_the_autocast_dtype():
    layer = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    for name, dtype in PRECISIONS.items():
        with Speed(precision=name).autocast(torch.device("cpu")):
            assert layer(x).dtype == (dtype or torch.float32)


def test_speed_reads_its_knobs_from_the_config():
    cfg = Config({"PRECISION": "bf16", "TF32": False, "CUDNN_BENCHMARK": False, "CHANNELS_LAST": True, "COMPILE": True})
    assert Speed.from_config(cfg) == Speed("bf16", False, False, True, True)


def test_channels_last_converts_conv_weights_and_batches():
    class Task:
        memory_format = torch.contiguous_format

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    task = Task()
    forward = Speed(channels_last=True).prepare(model, task, torch.device("cpu"))
    assert forward is model  # not compiled
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert task.memory_format == torch.channels_last


@pytest.mark.slow
def test_bf16_channels_last_compiled_run_learns_and_saves_the_plain_module(tmp_path: Path):
    cfg = write_config(
        tmp_path / ".config",
        tmp_path / "results",
        "OPTIMIZER_SGD=n",
        "PRUNING_NONE=n",
        "TARGET_SPARSITIES=0.5",
        "EPOCHS=2",
        "PRECISION=bf16",
        "CHANNELS_LAST=y",
        "COMPILE=y",
        "MATRIX_NAME=speed",
    )
    proc = runner("run", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "results/speed/lenet5-adamw-magnitude-s0.5-seed0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final"]["accuracy"] > 0.75  # chance is 0.1; the same run in fp32 reaches 0.866
    assert summary["sparsity"] == pytest.approx(0.5, abs=0.005)
    state = checkpoint.load(run / "checkpoint.pt")["model"]
    assert not any(k.startswith("_orig_mod") for k in state)
    assert all(v.dtype in (torch.float32, torch.bool, torch.int64) for v in state.values())
