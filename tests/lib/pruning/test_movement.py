"""Movement pruning as Sanh, Wolf & Rush (2020) define it, on a 2x4 layer by hand: the forward pass uses W * M,
scores keep accumulating for pruned weights (straight-through), a pruned weight comes back with the value it
kept; and PRUNING_MOVEMENT_FROZEN, which zeroes pruned weights and never revives them. A real LeNet-5 run (a
pruned convolution and Linear layers) resumes bit for bit."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from lib import config as cfgmod
from lib.pruning import PRUNERS
from lib.pruning.base import PruningSettings, sparsity_of, squash_state
from lib.pruning.movement import MovementSettings
from lib.pruning.schedule import ScheduleSettings
from lib.step import accumulate, train_step
from lib.trainer import Interrupted, Trainer
from tests.helpers import StopAt, assert_same_run, lenet5_trainer

W0 = [[1.0, -2.0, 0.5, 3.0], [-1.0, 0.25, 2.0, -0.5]]
EYE = torch.eye(4)  # model(EYE) = (W * M)^T, and loss (model(EYE) * G^T).sum() has dL/dW' = G exactly
# Step 1's dL/dW': scores S = -W0 * G1 = [[0.5, 0.25, -0.125, 0.75], [0.375, -0.0625, 0.125, -0.5]]
G1 = [[-0.5, 0.125, 0.25, -0.25], [0.375, 0.25, -0.0625, -1.0]]
ZERO = [[0.0] * 4] * 2
# Step 4's: the pruned w[1,2] is pushed away from zero (its score rises), the kept w[0,1] toward it (falls)
G4 = [[0.0, -0.25, 0.0, 0.0], [0.0, 0.0, -0.5, 0.0]]
# The masks after steps 3 and 4 (50% of 8: the 4 highest scores kept)
M3 = [[True, True, False, True], [True, False, False, False]]
M4 = [[True, False, False, True], [True, False, True, False]]


def _layer(frozen: bool, shape: str = "cubic", steps: int = 4) -> tuple[nn.Sequential, object]:
    model = nn.Sequential(nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(W0))
    # cubic from step 1 to step 4, every step: 0, 3, 4 and 4 of the 8 weights pruned after steps 1-4
    schedule = ScheduleSettings(shape=shape, start_percent=0, end_percent=100, interval=1)
    pruner = PRUNERS["movement"](model, MovementSettings(target=0.5, schedule=schedule, frozen=frozen), steps)
    pruner.prepare()
    return model, pruner


def _step(model, pruner, optimizer, g) -> None:
    batch = (EYE, torch.tensor(g).T)
    train_step(model, [batch], lambda m, b: (m(b[0]) * b[1]).sum(), optimizer, pruner=pruner)


def test_a_pruned_weight_keeps_its_score_and_value_and_comes_back():
    model, pruner = _layer(frozen=False)
    w = model[0].weight
    sgd = torch.optim.SGD(model.parameters(), lr=0.25)  # no momentum, no decay
    pruner.attach(sgd)
    for g in (G1, ZERO, ZERO):
        _step(model, pruner, sgd, g)
    # Step 1 moved every weight by -0.25 * G1; steps 2 and 3 pruned 3, then 4 weights, and zeroed none of them
    w1 = [[1.125, -2.03125, 0.4375, 3.0625], [-1.09375, 0.1875, 2.015625, -0.25]]
    assert torch.equal(w, torch.tensor(w1))
    assert torch.equal(model[0].weight_mask, torch.tensor(M3))
    assert torch.equal(model(EYE), (w * torch.tensor(M3)).T)  # the forward pass uses W * M
    assert pruner.sparsity() == 0.5 and pruner.layer_sparsity() == {"0": 0.5}
    assert sparsity_of(model, PruningSettings()) == 0.5

    _step(model, pruner, sgd, G4)
    # W.grad after the step is dL/dW = G4 * M3: the masked w[1,2] got no gradient and did not move
    assert torch.equal(w.grad, torch.tensor([[0.0, -0.25, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    assert w[1, 2].item() == 2.015625 and w[0, 1].item() == -2.03125 + 0.25 * 0.25
    # Its score still moved: S[1,2] = 0.125 - 2.015625 * -0.5 = 1.1328125, S[0,1] = 0.25 - 2.03125 * 0.25
    want = [[0.5, -0.2578125, -0.125, 0.75], [0.375, -0.0625, 1.1328125, -0.5]]
    assert torch.equal(pruner.scores["0"], torch.tensor(want))
    # so the update after step 4 brings w[1,2] back, with its value, and prunes w[0,1] (its value kept too)
    assert torch.equal(model[0].weight_mask, torch.tensor(M4))
    assert w[0, 1].item() == -1.96875
    assert torch.equal(model(EYE), (w * torch.tensor(M4)).T)
    assert model(EYE)[2, 1].item() == 2.015625 and model(EYE)[1, 0].item() == 0.0
    assert pruner.sparsity() == 0.5 and sparsity_of(model, PruningSettings()) == 0.5


def test_frozen_zeroes_pruned_weights_and_never_revives_them():
    model, pruner = _layer(frozen=True)
    w = model[0].weight
    sgd = torch.optim.SGD(model.parameters(), lr=0.25)
    pruner.attach(sgd)
    for g in (G1, ZERO, ZERO, G4):
        _step(model, pruner, sgd, g)
    # The pruned weights were zeroed when pruned, so step 4 adds 0 * -0.5 to S[1,2]; its score is pinned anyway
    w4 = [[1.125, -1.96875, 0.0, 3.0625], [-1.09375, 0.0, 0.0, 0.0]]
    assert torch.equal(w, torch.tensor(w4))
    frozen_scores = [[0.5, -0.2578125, -0.125, 0.75], [0.375, -0.0625, 0.125, -0.5]]
    assert torch.equal(pruner.scores["0"], torch.tensor(frozen_scores))
    assert torch.equal(model[0].weight_mask, torch.tensor(M3))  # nothing came back, w[0,1] was not pruned
    assert "forward" not in vars(model[0])  # the plain forward pass
    assert pruner.sparsity() == 0.5


def test_the_backward_hands_the_unmasked_gradient_to_the_scores_and_the_masked_one_to_the_optimizer():
    """dL/dS = dL/dW' * W for every weight; dL/dW = dL/dW' * M, checked against W' = W * M built by hand."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    settings = MovementSettings(target=0.5, scope="layer", schedule=ScheduleSettings(shape="constant"))
    pruner = PRUNERS["movement"](model, settings, 10)
    pruner.prepare()  # constant: each layer at 50% now (all scores 0: the first half of its entries pruned)
    layers = [model[0], model[2]]
    assert [int(m.weight_mask.sum()) for m in layers] == [6, 3]
    x = torch.randn(5, 4)

    def loss(m, batch):
        return m(batch).square().sum()

    primed = [nn.Parameter(m.weight.detach() * m.weight_mask) for m in layers]  # W', leaves of their own
    h = torch.tanh(nn.functional.linear(x, primed[0], model[0].bias))
    nn.functional.linear(h, primed[1], model[2].bias).square().sum().backward()
    accumulate(model, [x], loss)
    for m, p in zip(layers, primed, strict=True):
        assert torch.equal(m.weight.grad, p.grad)  # before the pruner's turn: dL/dW', masked entries included
    pruner.before_step()
    for name, m, p in zip(["0", "2"], layers, primed, strict=True):
        assert torch.equal(pruner.scores[name], -m.weight.detach() * p.grad)
        assert torch.equal(m.weight.grad, p.grad * m.weight_mask)
        assert bool((p.grad[~m.weight_mask] != 0).all())  # so the masked entries did add to the scores


def test_squash_exports_w_times_m_and_a_deep_copy_masks_its_own_weights():
    model, pruner = _layer(frozen=False)
    with torch.no_grad():
        model[0].weight_mask.copy_(torch.tensor(M4))
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin[0].weight.mul_(2)
    assert torch.equal(twin(EYE), 2 * model(EYE))  # the copy's forward reads the copy's weight and mask
    exported = squash_state(model.state_dict())
    assert set(exported) == {"0.weight"} and torch.equal(exported["0.weight"], torch.tensor(W0) * torch.tensor(M4))
    before = model(EYE)
    pruner.squash()
    assert set(model.state_dict()) == {"0.weight"} and "forward" not in vars(model[0])
    assert torch.equal(model[0].weight, exported["0.weight"]) and torch.equal(model(EYE), before)
    assert sparsity_of(model, PruningSettings()) == 0.5


def test_movement_settings_read_the_frozen_option():
    for value in (False, True):
        cfg = cfgmod.from_defaults(["PRUNING_MOVEMENT=y", f"PRUNING_MOVEMENT_FROZEN={'y' if value else 'n'}"])
        settings = PRUNERS["movement"].Settings.from_config(cfg, {"target_sparsity": 0.5})
        assert isinstance(settings, MovementSettings) and settings.frozen is value and settings.target == 0.5


# LeNet-5 (conv2, fc1 and fc2 pruned: the first convolution and the head stay dense), movement with revival
LENET = (
    "OPTIMIZER_SGD=n",
    "OPTIMIZER_ADAMW=y",
    "PRUNING_NONE=n",
    "PRUNING_MAGNITUDE=n",
    "PRUNING_MOVEMENT=y",
    "TARGET_SPARSITIES=0.5",
    "PRUNING_START_PERCENT=0",
    "PRUNING_END_PERCENT=80",
    "PRUNING_INTERVAL=5",
    "EPOCHS=1",
    "BATCH_SIZE=32",  # 45 steps
    "LOG_INTERVAL=5",
    "CHECKPOINT_INTERVAL=10",
    "DEVICE=cpu",
)


def _trainer(run_dir: Path) -> Trainer:
    return lenet5_trainer(run_dir, LENET)


@pytest.mark.slow
def test_a_lenet5_movement_run_hits_its_target_and_resumes_bit_for_bit(tmp_path: Path):
    reference = _trainer(tmp_path / "reference")
    summary = reference.fit()
    # 30240 of the 2400 + 48000 + 10080 weights of conv2, fc1 and fc2 are masked; none of them is zero
    assert summary["sparsity"] == 0.5
    layers = [m for _, m in reference.pruner.modules]
    assert sum(int((~m.weight_mask).sum()) for m in layers) == 30240
    assert all(bool((m.weight[~m.weight_mask] != 0).all()) for m in layers)
    stopped = _trainer(tmp_path / "stopped")
    stopped.ctx.stop = StopAt(stopped, 22)  # between checkpoints, between mask updates
    with pytest.raises(Interrupted):
        stopped.fit()
    _trainer(tmp_path / "stopped").fit()
    assert_same_run(tmp_path / "reference", tmp_path / "stopped")
