"""ResNet-18/50 (CIFAR variant) shapes and parameter counts, batched augmentation, and real learning on the
3-channel digits through the runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lib import config as cfgmod
from lib.data.augment import crop_flip, cutout, with_channels
from lib.matrix import expand
from models.resnet.model import ResNet, ResNetConfig
from tests.helpers import runner, write_config


@pytest.mark.parametrize("depth,classes,params", [(18, 10, 11_173_962), (50, 100, 23_705_252)])
def test_shapes_and_parameter_counts(depth, classes, params):
    model = ResNet(ResNetConfig(depth=depth, num_classes=classes))
    assert sum(p.numel() for p in model.parameters()) == params  # the usual CIFAR ResNet-18 / -50 counts
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, classes)


def test_crop_flip_keeps_shape_dtype_and_content_and_is_seeded():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).remainder(251).to(torch.uint8).view(2, 3, 32, 32) + 1
    torch.manual_seed(0)
    a = crop_flip(x)
    torch.manual_seed(0)
    b = crop_flip(x)
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    torch.manual_seed(1)
    assert not torch.equal(crop_flip(x), a)
    # every kept pixel comes from its own image and channel, the rest is padding (0)
    for i in range(2):
        for c in range(3):
            values = set(a[i, c].unique().tolist()) - {0}
            assert values <= set(x[i, c].unique().tolist())


def test_crop_without_padding_is_identity_or_mirror():
    x = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8)
    out = crop_flip(x, pad=0)
    for i in range(8):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2))


def test_cutout_zeros_one_square_per_image():
    x = torch.full((4, 3, 32, 32), 7, dtype=torch.uint8)
    torch.manual_seed(0)
    out = cutout(x, 8)
    for i in range(4):
        zeros = (out[i, 0] == 0).sum().item()
        assert 16 <= zeros <= 64  # a full 8x8 square, or a border-clipped one (at least a quarter of it)
        assert torch.equal(out[i, 0] == 0, out[i, 1] == 0)  # the same square in every channel
    assert torch.equal(cutout(x, 0), x)


def test_with_channels_replicates_grayscale():
    x = torch.randint(0, 255, (2, 1, 32, 32), dtype=torch.uint8)
    y = with_channels(x, 3)
    assert y.shape == (2, 3, 32, 32) and all(torch.equal(y[:, c], x[:, 0]) for c in range(3))


@pytest.mark.slow
def test_resnet18_learns_the_three_channel_digits(tmp_path: Path):
    cfg = write_config(
        tmp_path / ".config",
        tmp_path / "results",
        "EPOCHS=1",
        "PRUNING_MAGNITUDE=n",
        "OPTIMIZER_ADAMWPRUNE=n",
        defconfig="resnet18-quick",
    )
    proc = runner("run", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "results/resnet18-quick/resnet18-adamw-none-seed0/summary.json").read_text())
    assert summary["model"] == "resnet18" and summary["final"]["accuracy"] > 0.3  # chance is 0.1


def _cells(name: str) -> set[tuple]:
    plan = expand(cfgmod.load(cfgmod.DEFCONFIGS / name))
    return {(r.axes["model"], r.axes["optimizer"], r.axes["pruning"], r.axes["target_sparsity"]) for r in plan.runs}


EXTERNAL = ("sgd", "adam", "adamw", "adamwadv", "adamwspam")


def test_state_pruning_compare_is_movement_for_each_optimizer_vs_adamwprune_state():
    expected = {("resnet18", o, "movement", 0.7) for o in EXTERNAL} | {("resnet18", "adamwprune", "state", 0.7)}
    assert _cells("resnet18-state-pruning-compare") == expected


def test_movement_pruning_compare():
    assert _cells("resnet18-movement-pruning-compare") == {("resnet18", o, "movement", 0.7) for o in EXTERNAL}


def test_comprehensive_pruning_compare_has_the_anchor_cells():
    sparse = (0.5, 0.7, 0.9)
    expected = {("resnet18", o, "none", 0.0) for o in EXTERNAL}
    expected |= {("resnet18", o, p, s) for o in EXTERNAL for p in ("magnitude", "movement") for s in sparse}
    expected |= {("resnet18", "adamwprune", "state", s) for s in sparse}
    assert _cells("resnet18-comprehensive-pruning-compare") == expected  # 5 x 7 + 3 = 38 runs


def test_resnet50_adamwspam_vs_adamwprune():
    """The published ResNet-50 / CIFAR-100 table's AdamWSpam-base columns (issue 14): AdamWPrune (state) and
    AdamWSpam + magnitude at 50/70/90%, SPAM theta = 50, and both dense baselines."""
    sparse = (0.5, 0.7, 0.9)
    expected = {("resnet50", "adamwspam", "magnitude", s) for s in sparse}
    expected |= {("resnet50", "adamwprune", "state", s) for s in sparse}
    expected |= {("resnet50", "adamwspam", "none", 0.0), ("resnet50", "adamwprune", "none", 0.0)}
    assert _cells("resnet50-adamwspam-vs-adamwprune") == expected
    cfg = cfgmod.load(cfgmod.DEFCONFIGS / "resnet50-adamwspam-vs-adamwprune")
    assert cfg["IMAGE_DATASET"] == "cifar100" and cfg["ADAMWPRUNE_BASE"] == "adamwspam"
    assert cfg["SPAM_THRESHOLD"] == 50


@pytest.mark.parametrize(
    "name,depth,dataset", [("resnet18-cifar10", "resnet18", "cifar10"), ("resnet50-cifar100", "resnet50", "cifar100")]
)
def test_standard_recipes(name, depth, dataset):
    cfg = cfgmod.load(cfgmod.DEFCONFIGS / name)
    assert _cells(name) == {(depth, "sgd", "none", 0.0)}
    assert (cfg["IMAGE_DATASET"], cfg["SGD_LR"], cfg["SGD_NESTEROV"], cfg["SGD_WEIGHT_DECAY"]) == (
        dataset,
        0.1,
        True,
        5e-4,
    )
    assert (cfg["EPOCHS"], cfg["BATCH_SIZE"], cfg["LR_SCHEDULE"]) == (200, 128, "cosine")
