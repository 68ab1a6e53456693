"""Every registered optimizer, driven with a pruner by the training loop's own step
(:func:`lib.step.train_step`: masked gradients, clipping, step, re-masking, LR schedule), keeps pruned weights
exactly zero after every step — including the ones that skip re-masking weights between mask updates because
they are elementwise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib import checkpoint
from lib import config as cfgmod
from lib.optimizers import OPTIMIZERS
from lib.optimizers.schedules import LRSchedule
from lib.pruning import PRUNERS
from lib.step import train_step


@pytest.fixture(scope="module")
def cfg() -> cfgmod.Config:
    return cfgmod.from_defaults(
        [f"{OPTIMIZERS.symbol(n)}=y" for n in OPTIMIZERS.names()]
        + [
            "PRUNING_MAGNITUDE=y",
            "PRUNING_INTERVAL=7",
            "SPAM_RESET_INTERVAL=10",
            "SPAM_WARMUP_STEPS=3",
            "SPAM_CLIP_SKIP_STEPS=2",
            "ADAMWADV_CLIP_NORM=0.5",
        ],
    )


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_pruned_weights_stay_exactly_zero(cfg, name, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 3))
    steps = 40
    pruning = "state" if name == "adamwprune" else "magnitude"
    pruner_cls = PRUNERS[pruning]
    settings = pruner_cls.Settings.from_config(cfg, {"target_sparsity": 0.6, "variant": "bitter0"})
    pruner = pruner_cls(model, settings, steps)
    pruner.prepare()
    setup = OPTIMIZERS[name](model, cfg)
    pruner.attach(setup.optimizer, setup.elementwise)
    x, y = torch.randn(32, 12), torch.randint(0, 3, (32,))
    schedule = LRSchedule(setup.optimizer, steps, cfg, setup.schedule)
    for step in range(steps):
        train_step(
            model,
            [(x, y)],
            lambda m, batch: nn.functional.cross_entropy(m(batch[0]), batch[1]),
            setup.optimizer,
            pruner=pruner,
            clip_grad_norm=setup.clip_grad_norm,
            schedule=schedule,
        )
        for _, layer in pruner.modules:
            assert torch.all(layer.weight[~layer.weight_mask] == 0), (name, step)
    assert [layer for _, layer in pruner.modules] == [model[0], model[2]]  # the head stays dense by default
    pruned = sum(int((~layer.weight_mask).sum()) for _, layer in pruner.modules)
    assert abs(pruned / (12 * 24 + 24 * 24) - 0.6) < 0.005
    # Its state is tensors and plain values only: a checkpoint of it loads with weights_only=True, and back.
    checkpoint.save({"optimizer": setup.optimizer.state_dict(), "pruner": pruner.state_dict()}, tmp_path / "c.pt")
    restored = checkpoint.load(tmp_path / "c.pt")
    setup.optimizer.load_state_dict(restored["optimizer"])
    pruner.load_state_dict(restored["pruner"])
