"""The training step: one function that the loop, the tests and the benchmarks share."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lib.step import accumulate, train_step, update


def _loss(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x), y)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_a_step_is_the_hand_written_one_bit_for_bit():
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    a, b = _model(), _model()
    opt_a, opt_b = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (a, b))
    for _ in range(3):
        loss = train_step(a, [(x, y)], _loss, opt_a, clip_grad_norm=0.5)
        opt_b.zero_grad()
        expected = _loss(b, (x, y))
        expected.backward()
        torch.nn.utils.clip_grad_norm_(b.parameters(), 0.5)
        opt_b.step()
        assert torch.equal(loss, expected.detach())
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_micro_batches_accumulate_the_mean_gradient():
    x, y = torch.randn(4, 4), torch.tensor([0, 1, 2, 0])
    whole, split = _model(), _model()
    full = accumulate(whole, [(x, y)], _loss)
    halves = accumulate(split, [(x[:2], y[:2]), (x[2:], y[2:])], _loss)
    assert torch.allclose(full, halves)
    for pw, ps in zip(whole.parameters(), split.parameters(), strict=True):
        assert torch.allclose(pw.grad, ps.grad, atol=1e-6)


def test_update_runs_the_hooks_in_the_loops_order():
    calls = []
    model = _model()

    class Recorder(torch.optim.SGD):
        def step(self, closure=None):
            calls.append("step")
            return super().step(closure)

    class Pruner:
        def before_step(self):
            calls.append("before_step")

        def after_step(self):
            calls.append("after_step")

    class Schedule:
        def step(self):
            calls.append("schedule")

    for p in model.parameters():
        p.grad = torch.ones_like(p)
    update(model, Recorder(model.parameters(), lr=0.1), Pruner(), 0.0, Schedule())
    assert calls == ["before_step", "step", "after_step", "schedule"]
