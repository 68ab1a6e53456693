"""Magnitude pruning and the gradual cubic schedule on hand-computed cases."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lib.config import Config
from lib.pruning import PRUNERS
from lib.pruning.base import PruningSettings, global_keep, sparsity_of
from lib.pruning.schedule import ScheduleSettings, SparsitySchedule


def _cfg(scope: str = "global", start: int = 0, end: int = 0, interval: int = 1) -> Config:
    return Config(
        {
            "PRUNING_SCOPE": scope,
            "PRUNING_START_PERCENT": start,
            "PRUNING_START_STEP": 0,
            "PRUNING_END_PERCENT": end,
            "PRUNING_INTERVAL": interval,
            "PRUNING_SCHEDULE": "cubic",
            "PRUNING_EXCLUDE_HEAD": False,
            "PRUNING_EXCLUDE_FIRST_CONV": False,
        }
    )


def _pruner(method: str, model: nn.Module, cfg, target: float, total_steps: int, **axes):
    """A method's pruner the way the trainer builds one: its settings from the config and the run's axes."""
    cls = PRUNERS[method]
    return cls(model, cls.Settings.from_config(cfg, {"target_sparsity": target, **axes}), total_steps)


def test_cubic_schedule_matches_zhu_gupta_by_hand():
    s = SparsitySchedule(final=0.8, start=10, end=20, interval=5)
    assert s.sparsity(0) == 0.0 and s.sparsity(9) == 0.0
    assert s.sparsity(10) == 0.0
    assert s.sparsity(15) == pytest.approx(0.8 * (1 - 0.5**3))  # 0.7
    assert s.sparsity(20) == pytest.approx(0.8) and s.sparsity(99) == pytest.approx(0.8)
    assert [t for t in range(30) if s.is_update_step(t)] == [10, 15, 20]


def test_late_ramp_by_hand():
    s = SparsitySchedule(final=0.8, start=10, end=20, interval=5, shape="late")
    assert s.sparsity(10) == 0.0
    assert s.sparsity(15) == pytest.approx(0.8 * 0.5**3)  # 0.1: most pruning is left for the end
    assert s.sparsity(20) == pytest.approx(0.8)


def test_schedule_from_config_uses_percentages_of_total_steps():
    s = ScheduleSettings.from_config(_cfg(start=10, end=70, interval=7)).build(0.5, total_steps=200)
    assert (s.start, s.end, s.interval) == (20, 140, 7)
    one_shot = ScheduleSettings.from_config(_cfg(start=0, end=0)).build(0.5, total_steps=200)
    assert (one_shot.start, one_shot.end) == (1, 1) and one_shot.is_update_step(1)


def test_start_step_stays_put_when_a_run_trains_longer():
    """The published late schedule s(t) = s_f * ((t - t_w) / (T - t_w))^3: t_w = 500 in a 10,000-step run and in
    bitter2's 12,100-step one (a 5% start would move to 605), T the run's end."""
    cfg = Config({**_cfg(end=100).values, "PRUNING_START_STEP": 500, "PRUNING_SCHEDULE": "late"})
    for total in (10_000, 12_100):
        s = ScheduleSettings.from_config(cfg).build(0.5, total_steps=total)
        assert (s.start, s.end) == (500, total)
        middle = (500 + total) / 2
        assert s.sparsity(int(middle)) == pytest.approx(0.5 * ((int(middle) - 500) / (total - 500)) ** 3)


def test_global_keep_on_a_2x4_layer():
    w = torch.tensor([[0.1, -0.9, 0.3, 0.0], [-0.5, 0.2, 0.8, -0.05]])
    mask = torch.ones_like(w, dtype=torch.bool)
    global_keep([w.abs()], [mask], 0.5)
    expected = torch.tensor([[False, True, False, False], [True, False, True, False]])
    # the 4 largest |w|: 0.9, 0.8, 0.5, 0.3
    expected[0, 2] = True
    assert torch.equal(mask, expected)


def test_global_vs_per_layer_scope():
    model = nn.Sequential(nn.Linear(4, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]))
        model[1].weight.copy_(torch.tensor([[0.1, 0.2], [0.3, 0.4]]))
    for scope, kept0, kept1 in (("global", 6, 0), ("layer", 4, 2)):
        m = nn.Sequential(nn.Linear(4, 2, bias=False), nn.Linear(2, 2, bias=False))
        m.load_state_dict(model.state_dict())
        pruner = _pruner("magnitude", m, _cfg(scope), 0.5, 1)
        pruner.prepare()
        pruner.after_step()  # step 1 == end: one-shot to 50%
        assert int(m[0].weight_mask.sum()) == kept0 and int(m[1].weight_mask.sum()) == kept1, scope
        assert sparsity_of(m, PruningSettings()) == 0.5
        assert torch.all(m[0].weight[~m[0].weight_mask] == 0)


def test_pruned_weights_stay_zero_through_optimizer_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    pruner = _pruner("magnitude", model, _cfg(start=0, end=50, interval=5), 0.75, 20)
    pruner.prepare()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(16, 8), torch.randint(0, 2, (16,))
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        pruner.before_step()
        for layer in (model[0], model[2]):
            assert torch.all(layer.weight.grad[~layer.weight_mask] == 0)
        opt.step()
        pruner.after_step()
        for layer in (model[0], model[2]):
            assert torch.all(layer.weight[~layer.weight_mask] == 0)
    assert sparsity_of(model, PruningSettings()) == pytest.approx(0.75, abs=0.005)


def test_none_prunes_nothing_and_adds_no_buffers():
    model = nn.Linear(3, 3)
    pruner = _pruner("none", model, _cfg(), 0.0, 10)
    pruner.prepare()
    pruner.after_step()
    assert "weight_mask" not in model.state_dict()


def test_global_keep_is_exact_against_a_full_sort_with_ties_and_pinned_entries():
    """The chunked histogram threshold equals a full sort, tiny bins forcing several refinements."""
    gen = torch.Generator().manual_seed(0)
    for trial in range(40):
        shapes = [tuple(int(d) for d in torch.randint(1, 30, (2,), generator=gen)) for _ in range(3)]
        scores = [
            torch.randint(0, 6, s, generator=gen).float() if trial % 2 else torch.randn(s, generator=gen)
            for s in shapes
        ]
        if trial % 4 == 3:  # some entries pinned as already pruned
            scores[0].view(-1)[: scores[0].numel() // 2] = float("-inf")
        sparsity = float(torch.rand((), generator=gen))
        masks = [torch.ones(s, dtype=torch.bool) for s in shapes]
        global_keep(scores, masks, sparsity, bins=4, gather_limit=3)
        flat = torch.cat([s.reshape(-1) for s in scores])
        keep = torch.cat([m.reshape(-1) for m in masks])
        n_prune = round(sparsity * flat.numel())
        assert int((~keep).sum()) == n_prune
        if 0 < n_prune < flat.numel():
            assert flat[~keep].max() <= flat[keep].min()  # nothing kept scores below anything pruned
