"""AdamWPrune's state scores (bitter0-9) on a hand-computed 2x4 tensor, and state pruning end to end."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lib.config import Config
from lib.pruning import PRUNERS
from lib.pruning.base import PruningSettings, global_keep, sparsity_of
from lib.pruning.state import VARIANTS, layer_sparsity

EPS = 1e-8
W = torch.tensor([[0.5, -2.0, 1.0, -0.25], [4.0, 0.1, -1.0, 2.0]])
M = torch.tensor([[0.2, -0.4, -0.1, 0.05], [-1.0, 0.0, -0.3, 0.5]])
V = torch.tensor([[0.04, 0.16, 0.01, 0.0025], [1.0, 0.01, 0.09, 0.25]])  # sqrt(V) = |M| except [1, 1]: 0.1
BIAS1 = 1 - 0.9**3


def _by_hand(name: str, i: int, j: int) -> float:
    """Each formula written out on plain floats, independent of the tensor code under test."""
    w, m, v = float(W[i, j]), float(M[i, j]), float(V[i, j])
    sign = math.copysign(1.0, w)
    return {
        "bitter0": abs(w * m) * abs(w) / (math.sqrt(v) + EPS),
        "bitter1": abs(w),
        "bitter2": abs(w),
        "bitter3": abs(w) * math.sqrt(abs(m) + EPS),
        "bitter4": abs(w) * math.sqrt(abs(m) + EPS),
        "bitter5": -sign * m / (math.sqrt(v) + EPS) + 0.1 * abs(w),
        "bitter6": abs(w) * math.sqrt(abs(m)) * math.sqrt(m * m / (v + EPS)),
        "bitter7": abs(w) * (v + EPS) ** 0.25,
        "bitter8": abs(w) * math.sqrt(abs(m / BIAS1)),
        "bitter9": abs(w) * math.sqrt(abs(m)) - 0.1 * sign * m / (math.sqrt(v) + EPS),
    }[name]


@pytest.mark.parametrize("name", [f"bitter{i}" for i in range(10)])
def test_every_score_matches_the_hand_computation(name):
    scores = VARIANTS[name].score(W, M, V, EPS, BIAS1)
    for i in range(2):
        for j in range(4):
            assert float(scores[i, j]) == pytest.approx(_by_hand(name, i, j), rel=1e-5, abs=1e-7), (i, j)


def test_bitter5_prunes_weights_adam_pushes_toward_zero():
    # W[0,0]=0.5 with m=0.2 (same sign: Adam shrinks it) vs W[0,2]=1.0 with m=-0.1 (Adam grows it)
    s = VARIANTS["bitter5"].score(W, M, V, EPS, BIAS1)
    assert s[0, 0] < 0 < s[0, 2]
    mask = torch.ones_like(W, dtype=torch.bool)
    global_keep([s], [mask], 0.25)  # prune 2 of 8
    # the two lowest: [0,0] = -1 + 0.05 and [1,2] = -1 + 0.1 (W=-1, m=-0.3); [0,1] and [1,3] score -0.8
    assert not mask[0, 0] and not mask[1, 2] and int(mask.sum()) == 6


def test_layer_adaptive_targets():
    assert layer_sparsity(0.5, 0, 5) == pytest.approx(0.35)
    assert layer_sparsity(0.5, 4, 5) == pytest.approx(0.65)
    assert layer_sparsity(0.9, 4, 5) == 0.95  # capped


CFG = Config(
    {
        "PRUNING_SCOPE": "global",
        "PRUNING_START_PERCENT": 10,
        "PRUNING_END_PERCENT": 60,
        "PRUNING_INTERVAL": 5,
        "PRUNING_SCHEDULE": "cubic",
        "ADAM_EPS": EPS,
        "ADAMWPRUNE_BUDGET_SCALE": 1.21,
        "PRUNING_EXCLUDE_HEAD": False,
        "PRUNING_EXCLUDE_FIRST_CONV": False,
    }
)


def _pruner(method: str, model: nn.Module, cfg, target: float, total_steps: int, **axes):
    """A method's pruner the way the trainer builds one: its settings from the config and the run's axes."""
    cls = PRUNERS[method]
    return cls(model, cls.Settings.from_config(cfg, {"target_sparsity": target, **axes}), total_steps)


@pytest.mark.parametrize("variant", ["bitter0", "bitter3", "bitter5", "bitter7", "bitter9"])
@pytest.mark.parametrize("base", [torch.optim.Adam, torch.optim.AdamW])
def test_adamwprune_hits_target_and_keeps_weights_and_moments_zero(variant, base):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    steps = 60
    pruner = _pruner("state", model, CFG, 0.7, steps, variant=variant)
    pruner.prepare()
    opt = base(model.parameters(), lr=1e-2, weight_decay=0.01)
    pruner.attach(opt)
    x, y = torch.randn(64, 16), torch.randint(0, 4, (64,))
    layers = [model[0], model[2], model[4]]
    for step in range(1, steps + 1):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        pruner.before_step()
        opt.step()
        pruner.after_step()
        for layer in layers:
            dead = ~layer.weight_mask
            assert torch.all(layer.weight[dead] == 0), step
            state = opt.state[layer.weight]
            assert torch.all(state["exp_avg"][dead] == 0) and torch.all(state["exp_avg_sq"][dead] == 0), step
    assert abs(sparsity_of(model, PruningSettings()) - 0.7) <= 0.005
    assert all(layer.weight_mask.dtype == torch.bool for layer in layers)


def test_bitter2_scales_the_budget_and_others_do_not():
    def scale(method: str, variant: str | None) -> float:
        return PRUNERS[method].Settings.from_config(CFG, {"target_sparsity": 0.7, "variant": variant}).budget_scale

    assert scale("state", "bitter2") == 1.21
    assert scale("state", "bitter0") == 1.0
    assert scale("magnitude", None) == 1.0
