"""Optimizer builders: thin over torch.optim (bitwise-equal trajectories), nanoGPT parameter groups, schedules."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from lib.config import Config
from lib.optimizers import OPTIMIZERS, AdamMoments, SpamSettings, param_groups, set_peak_lr
from lib.optimizers.schedules import LRSchedule
from tests.helpers import runner, write_config

CFG = Config(
    {
        "GRAD_CLIP_NORM": 0.0,
        "SGD_LR": 0.1,
        "SGD_MOMENTUM": 0.9,
        "SGD_NESTEROV": True,
        "SGD_WEIGHT_DECAY": 5e-4,
        "ADAM_LR": 1e-3,
        "ADAM_WEIGHT_DECAY": 0.0,
        "ADAMW_LR": 1e-3,
        "ADAMW_WEIGHT_DECAY": 0.01,
        "ADAM_BETA1": 0.9,
        "ADAM_BETA2": 0.999,
        "ADAM_EPS": 1e-8,
        "LR_SCHEDULE": "cosine",
        "LR_WARMUP_STEPS": 2,
        "LR_MIN_RATIO": 0.1,
    }
)

REFERENCE = {
    "sgd": lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True),
    "adam": lambda groups: torch.optim.Adam(groups, lr=1e-3, betas=(0.9, 0.999), eps=1e-8),
    "adamw": lambda groups: torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.999), eps=1e-8),
}
DECAY = {"sgd": 5e-4, "adam": 0.0, "adamw": 0.01}


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4), nn.Linear(4, 3))


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_trajectory_equals_torch_optim_bitwise(name):
    ours, ref = _model(), _model()
    opt = OPTIMIZERS[name](ours, CFG).optimizer
    ref_opt = REFERENCE[name](param_groups(ref, DECAY[name]))
    assert_same_trajectory((ours, opt), (ref, ref_opt), steps=5)


def assert_same_trajectory(*pairs: tuple[nn.Module, torch.optim.Optimizer], steps: int) -> None:
    """Train each (model, optimizer) on the same batch for ``steps`` steps; the weights must end bitwise equal."""
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    for _ in range(steps):
        for m, o in pairs:
            o.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            o.step()
    (first, _), *rest = pairs
    for other, _ in rest:
        for a, b in zip(first.parameters(), other.parameters(), strict=True):
            assert torch.equal(a, b)


def test_weight_decay_only_on_matrices():
    groups = param_groups(_model(), 0.1)
    assert groups[0]["weight_decay"] == 0.1 and all(p.dim() >= 2 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0.0 and all(p.dim() < 2 for p in groups[1]["params"])
    assert len(groups[0]["params"]) == 2 and len(groups[1]["params"]) == 4  # 2 weights; 2 biases + LN w, b


def test_warmup_cosine_by_hand():
    opt = torch.optim.SGD(_model().parameters(), lr=1.0)
    sched = LRSchedule(opt, total_steps=12, cfg=CFG)
    lrs = [sched.get_last_lr()]
    for _ in range(12):
        sched.step()
        lrs.append(sched.get_last_lr())
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)  # warm-up 1/2, 2/2
    assert lrs[2] == pytest.approx(1.0)  # cosine starts at the peak
    assert lrs[7] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # half-way: 0.55
    assert lrs[12] == pytest.approx(0.1)  # ends at LR_MIN_RATIO x peak
    state = sched.state_dict()
    again = LRSchedule(opt, total_steps=12, cfg=CFG)
    again.load_state_dict(state)
    assert again.get_last_lr() == lrs[12]


def _cfg(**values) -> Config:
    return Config({**CFG.values, **values})


def _lrs(cfg: Config, total: int) -> list[float]:
    sched = LRSchedule(torch.optim.SGD(_model().parameters(), lr=2.0), total_steps=total, cfg=cfg)
    out = [sched.get_last_lr()]
    for _ in range(total):
        sched.step()
        out.append(sched.get_last_lr())
    return out


def test_wsd_by_hand():
    lrs = _lrs(_cfg(LR_SCHEDULE="wsd", LR_WARMUP_STEPS=2, LR_DECAY_PERCENT=40, LR_MIN_RATIO=0.0), 10)
    # warm-up 1/2, 2/2 of peak 2.0; stable to step 6; linear decay over the last 4 steps to 0
    assert lrs == pytest.approx([1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.5, 1.0, 0.5, 0.0])


def test_step_schedule_by_hand():
    lrs = _lrs(_cfg(LR_SCHEDULE="step", LR_WARMUP_STEPS=0, LR_STEP_PERCENT=30, LR_STEP_GAMMA=0.1), 10)
    assert lrs == pytest.approx([2.0, 2.0, 2.0, 0.2, 0.2, 0.2, 0.02, 0.02, 0.02, 0.002, 0.002])


def test_one_cycle_by_hand():
    cfg = _cfg(LR_SCHEDULE="onecycle", LR_ONECYCLE_PERCENT=40, LR_ONECYCLE_DIV=4.0, LR_MIN_RATIO=0.0)
    lrs = _lrs(cfg, 10)
    # rise over 4 steps from 2.0/4 = 0.5 to 2.0 along (1 - cos)/2: 0.5 + 1.5 * {0, 0.1464, 0.5, 0.8536}
    rise = [0.5 + 1.5 * 0.5 * (1 - math.cos(math.pi * k / 4)) for k in range(4)]
    # then cosine from 2.0 to 0 over the remaining 6 steps
    anneal = [2.0 * 0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(7)]
    assert lrs == pytest.approx(rise + anneal)
    assert lrs[2] == pytest.approx(1.25) and lrs[7] == pytest.approx(1.0)


def test_schedule_scales_every_group_from_its_own_peak():
    model = _model()
    opt = torch.optim.AdamW(
        [{"params": list(model[0].parameters()), "lr": 0.02}, {"params": list(model[2].parameters()), "lr": 0.001}]
    )
    LRSchedule(opt, total_steps=12, cfg=CFG)  # warm-up: factor 0.5 at step 0
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.0005])


def test_adamwadv_knobs_are_read():
    cfg = _cfg(
        ADAMWADV_LR=3e-3,
        ADAMWADV_WEIGHT_DECAY=0.05,
        ADAMWADV_AMSGRAD=True,
        ADAMWADV_COSINE=True,
        ADAMWADV_CLIP_NORM=0.5,
    )
    setup = OPTIMIZERS["adamwadv"](_model(), cfg)
    group = setup.optimizer.param_groups[0]
    assert group["amsgrad"] is True and group["lr"] == 3e-3 and group["weight_decay"] == 0.05
    assert setup.clip_grad_norm == 0.5 and setup.schedule == "cosine"
    plain = OPTIMIZERS["adamwadv"](
        _model(),
        _cfg(
            ADAMWADV_LR=3e-3,
            ADAMWADV_WEIGHT_DECAY=0.0,
            ADAMWADV_AMSGRAD=False,
            ADAMWADV_COSINE=False,
            ADAMWADV_CLIP_NORM=0.0,
        ),
    )
    assert plain.optimizer.param_groups[0]["amsgrad"] is False and plain.schedule is None
    assert plain.clip_grad_norm == 0.0


def test_settings_are_read_from_the_config_at_the_boundary():
    cfg = _cfg(
        ADAM_BETA1=0.8,
        ADAM_BETA2=0.95,
        ADAM_EPS=1e-6,
        ADAMWADV_LR=1e-3,
        ADAMWADV_WEIGHT_DECAY=0.0,
        ADAMWADV_AMSGRAD=False,
        ADAMWADV_COSINE=False,
        ADAMWADV_CLIP_NORM=0.0,
        ADAMWSPAM_LR=2e-3,
        ADAMWSPAM_WEIGHT_DECAY=0.0,
        SPAM_RESET_INTERVAL=7,
        SPAM_THRESHOLD=10.0,
        SPAM_WARMUP_STEPS=3,
        SPAM_CLIP_SKIP_STEPS=2,
    )
    assert AdamMoments.from_config(cfg) == AdamMoments(betas=(0.8, 0.95), eps=1e-6)
    assert SpamSettings.from_config(cfg) == SpamSettings(
        reset_interval=7, threshold=10.0, warmup_steps=3, clip_skip_steps=2
    )
    for name in ("adam", "adamw", "adamwadv", "adamwspam"):
        group = OPTIMIZERS[name](_model(), cfg).optimizer.param_groups[0]
        assert (group["betas"], group["eps"]) == ((0.8, 0.95), 1e-6), name
    spam = OPTIMIZERS["adamwspam"](_model(), cfg).optimizer
    assert (spam.reset_interval, spam.warmup_steps, spam.clip_skip_steps) == (7, 3, 2)
    assert spam.param_groups[0]["threshold"] == 10.0


def test_adamwprune_builds_its_base_optimizer():
    for base, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        setup = OPTIMIZERS["adamwprune"](_model(), _cfg(ADAMWPRUNE_BASE=base))
        assert type(setup.optimizer) is cls


def test_set_peak_lr_is_the_optimizer_built_at_that_rate():
    """The lr axis: AdamW whose peak is replaced follows torch AdamW built at the new rate bit for bit."""
    ours, ref = _model(), _model()
    opt = OPTIMIZERS["adamw"](ours, CFG).optimizer
    set_peak_lr(opt, 0.0036)
    assert [g["lr"] for g in opt.param_groups] == [0.0036, 0.0036]
    ref_opt = torch.optim.AdamW(param_groups(ref, 0.01), lr=0.0036, betas=(0.9, 0.999), eps=1e-8)
    assert_same_trajectory((ours, opt), (ref, ref_opt), steps=3)


def test_set_peak_lr_on_muon_keeps_the_adamw_to_muon_ratio():
    cfg = Config(
        {
            **CFG.values,
            "MUON_LR": 0.02,
            "MUON_WEIGHT_DECAY": 0.0,
            "MUON_MOMENTUM": 0.95,
            "MUON_NESTEROV": True,
            "MUON_NS_STEPS": 5,
            "MUON_LR_SCALE": "original",
            "MUON_LR_AXIS": "muon",
        }
    )
    opt = OPTIMIZERS["muon"](_model(), cfg).optimizer
    set_peak_lr(opt, 0.04)
    for group in opt.param_groups:  # ADAMW_LR / MUON_LR = 1e-3 / 0.02 before and after
        expected = 0.04 if group["optimizer"] == "muon" else pytest.approx(2e-3, rel=1e-12)
        assert group["lr"] == expected and group["base_lr"] == expected
    assert {g["optimizer"] for g in opt.param_groups} == {"muon", "adamw"}


def test_lr_axis_reaches_the_training_loop(tmp_path):
    """Two runs of one matrix differing only in LEARNING_RATES train at those rates (constant schedule)."""
    cfg = write_config(
        tmp_path / ".config",
        tmp_path / "results",
        "OPTIMIZER_SGD=n",
        "PRUNING_MAGNITUDE=n",
        "EPOCHS=1",
        "LR_SCHEDULE_CONSTANT=y",
        "LR_WARMUP_STEPS=0",
        "LEARNING_RATES=0.002 0.004",
        "MATRIX_NAME=lrs",
    )
    proc = runner("run", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    for lr in (0.002, 0.004):
        rows = (tmp_path / f"results/lrs/lenet5-adamw-none-lr{lr}-seed0/metrics.jsonl").read_text().splitlines()
        assert {json.loads(r)["lr"] for r in rows if json.loads(r)["split"] == "train"} == {lr}
