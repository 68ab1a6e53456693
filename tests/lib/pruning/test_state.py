"""AdamWPrune's state scores (bitter0-9) on a hand-computed 2x4 tensor, the structural weights of bitter8/9, the
variants' training budgets, and state pruning end to end."""

from __future__ import annotations

import math
import re
from collections import OrderedDict

import pytest
import torch
from torch import nn

from lib import config as cfgmod
from lib.config import Config
from lib.errors import UserError
from lib.estimate import run_budget
from lib.matrix import expand
from lib.pruning import PRUNERS
from lib.pruning.base import PruningSettings, global_keep, sparsity_of
from lib.pruning.state import VARIANTS, layer_sparsity

EPS = 1e-8
W = torch.tensor([[0.5, -2.0, 1.0, -0.25], [4.0, 0.1, -1.0, 2.0]])
M = torch.tensor([[0.2, -0.4, -0.1, 0.05], [-1.0, 0.0, -0.3, 0.5]])
V = torch.tensor([[0.04, 0.16, 0.01, 0.0025], [1.0, 0.01, 0.09, 0.25]])  # sqrt(V) = |M| except [1, 1]: 0.1


def _by_hand(name: str, i: int, j: int) -> float:
    """Each formula written out on plain floats, independent of the tensor code under test (bitter8/9 at
    structural weight 1: the pruner multiplies a layer's scores by its weight, tested below)."""
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
        "bitter7": abs(w) * (v**0.25 + EPS),
        "bitter8": abs(w) * math.sqrt(abs(m) + EPS),
        "bitter9": abs(w) * (v**0.25 + EPS),
    }[name]


@pytest.mark.parametrize("name", [f"bitter{i}" for i in range(10)])
def test_every_score_matches_the_hand_computation(name):
    scores = VARIANTS[name].score(W, M, V, EPS)
    for i in range(2):
        for j in range(4):
            assert float(scores[i, j]) == pytest.approx(_by_hand(name, i, j), rel=1e-5, abs=1e-7), (i, j)


@pytest.mark.parametrize("name", ["bitter7", "bitter9"])
def test_the_fourth_root_variants_add_eps_outside_the_root(name):
    # eps 0.01 makes the two readings differ: (v + eps)^(1/4) would floor the factor at 0.01^(1/4) = 0.316
    w, v = torch.tensor([2.0, -3.0]), torch.tensor([0.0, 16.0])
    scores = VARIANTS[name].score(w, torch.zeros(2), v, 0.01)
    assert scores.tolist() == pytest.approx([2.0 * 0.01, 3.0 * (2.0 + 0.01)], rel=1e-6)


def test_bitter5_prunes_weights_adam_pushes_toward_zero():
    # W[0,0]=0.5 with m=0.2 (same sign: Adam shrinks it) vs W[0,2]=1.0 with m=-0.1 (Adam grows it)
    s = VARIANTS["bitter5"].score(W, M, V, EPS)
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
        "PRUNING_START_STEP": 0,
        "PRUNING_END_PERCENT": 60,
        "PRUNING_INTERVAL": 5,
        "PRUNING_SCHEDULE": "cubic",
        "ADAM_EPS": EPS,
        "ADAMWPRUNE_BUDGET_SCALE": 1.21,
        "ADAMWPRUNE_BUDGET_SCALE_LONG": 1.3,
        "ADAMWPRUNE_WEIGHT_ATTENTION": 2.5,
        "ADAMWPRUNE_WEIGHT_MLP": 1.0,
        "ADAMWPRUNE_WEIGHT_COUPLING": 3.0,
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


def test_every_variant_has_its_published_budget():
    def scale(variant: str) -> float:
        return PRUNERS["state"].Settings.from_config(CFG, {"target_sparsity": 0.5, "variant": variant}).budget_scale

    published = {"bitter2": 1.21, "bitter3": 1.3, "bitter4": 1.3}  # 12,100 and 13,000 of 10,000 iterations
    assert {v: scale(v) for v in VARIANTS} == {f"bitter{i}": published.get(f"bitter{i}", 1.0) for i in range(10)}


def test_gpt2_variants_train_the_published_iterations():
    overrides = ("MODEL_LENET5=n", "MODEL_GPT2=y", "GPT2_MAX_ITERS=10000", "OPTIMIZER_ADAMW=n")
    adamwprune = ("OPTIMIZER_ADAMWPRUNE=y", "ADAMWPRUNE_VARIANTS=bitter0 bitter1 bitter2 bitter3 bitter4")
    pruning = ("PRUNING_NONE=n", "TARGET_SPARSITIES=0.5")
    cfg = cfgmod.from_defaults((*overrides, *adamwprune, *pruning))
    steps = {run.axes["variant"]: run_budget(run).steps for run in expand(cfg).runs}
    assert steps == {"bitter0": 10_000, "bitter1": 10_000, "bitter2": 12_100, "bitter3": 13_000, "bitter4": 13_000}


class _Roled(nn.Sequential):
    """Linear layers of four weights (1 x 4) named by the keys of ``roles``; the model declares the non-None roles."""

    def __init__(self, roles: dict[str, str | None]) -> None:
        super().__init__(OrderedDict((name, nn.Linear(4, 1, bias=False)) for name in roles))
        self.roles = {name: role for name, role in roles.items() if role}

    def module_roles(self) -> dict[str, str]:
        return self.roles


def _two_role_masks(variant: str, scope: str) -> list[list[bool]]:
    """Masks of an attention and an MLP layer after pruning half of their 8 weights, every moment 1."""
    model = _Roled({"attn": "attention", "mlp": "mlp"})
    with torch.no_grad():
        model.attn.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
        model.mlp.weight.copy_(torch.tensor([[1.5, 2.6, 3.5, 4.5]]))
    pruner = _pruner("state", model, Config({**CFG.values, "PRUNING_SCOPE": scope}), 0.5, 100, variant=variant)
    pruner.prepare()
    opt = torch.optim.Adam(model.parameters())
    for p in model.parameters():
        opt.state[p] = {"step": torch.tensor(3.0), "exp_avg": torch.ones(1, 4), "exp_avg_sq": torch.ones(1, 4)}
    pruner.attach(opt)
    pruner.update_mask(0.5)
    return [model.attn.weight_mask[0].tolist(), model.mlp.weight_mask[0].tolist()]


@pytest.mark.parametrize("variant", ["bitter8", "bitter9"])
def test_structural_weights_move_the_global_threshold_between_layer_types(variant):
    # scores |w| * (1 + ~1e-8): attention x 2.5 = 2.5, 5, 7.5, 10; MLP x 1.0 = 1.5, 2.6, 3.5, 4.5. The four lowest
    # are MLP 1.5, attention 2.5, MLP 2.6 and 3.5: attention keeps three weights, the MLP one.
    assert _two_role_masks(variant, "global") == [[False, True, True, True], [False, False, False, True]]
    # unweighted (bitter3 is bitter8 without the weight) the four lowest are 1, 1.5, 2 and 2.6: two each
    assert _two_role_masks("bitter3", "global") == [[False, False, True, True], [False, False, True, True]]
    # per layer a positive constant factor changes no layer's order: two each, as without weights
    assert _two_role_masks(variant, "layer") == [[False, False, True, True], [False, False, True, True]]


def test_structural_weights_come_from_the_knobs_and_the_models_roles():
    knobs = Config({**CFG.values, "ADAMWPRUNE_WEIGHT_ATTENTION": 2.0, "ADAMWPRUNE_WEIGHT_COUPLING": 4.0})

    def weights(model: nn.Module, cfg=knobs) -> list[float]:
        pruner = _pruner("state", model, cfg, 0.5, 100, variant="bitter8")
        pruner.prepare()
        return pruner.structural_weights()

    roles = {"attn": "attention", "mlp": "mlp", "couple": "coupling"}
    assert weights(_Roled(roles)) == [2.0, 1.0, 4.0]
    assert weights(_Roled({**roles, "couple": None})) == [2.0, 1.0, 1.0]  # a module the model does not name: 1.0
    assert weights(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))) == [1.0, 1.0]  # no roles declared
    assert weights(_Roled(roles), CFG) == [2.5, 1.0, 3.0]  # the published defaults
    with pytest.raises(ValueError, match="module role 'attn' is not one of attention, mlp, coupling"):
        weights(_Roled({"attn": "attn"}))


def test_gpt2_declares_its_attention_and_mlp_modules():
    from models.gpt2.model import GPT2, GPT2Config

    model = GPT2(GPT2Config(n_layer=1, n_head=2, n_embd=8, block_size=4, vocab_size=64, attn_gate="headwise"))
    pruner = _pruner("state", model, CFG, 0.5, 100, variant="bitter9")
    pruner.prepare()
    names = [name for name, _ in pruner.modules]
    assert names == [
        f"transformer.h.0.{n}" for n in ("attn.c_attn", "attn.c_proj", "attn.gate", "mlp.c_fc", "mlp.c_proj")
    ] + ["lm_head"]
    assert pruner.structural_weights() == [2.5, 2.5, 2.5, 1.0, 1.0, 1.0]  # the tied head has no role


class _TwoRoleRows(nn.Module):
    """One Linear (2 x 4) whose first row is "mlp" and second "coupling", as GPT-2's reciprocal FC1 declares."""

    def __init__(self, rows: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2, bias=False)
        self.rows = rows

    def module_roles(self):
        return {"fc": (("mlp", self.rows[0]), ("coupling", self.rows[1]))}


def _row_role_mask(variant: str) -> list[list[bool]]:
    model = _TwoRoleRows()
    with torch.no_grad():
        model.fc.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 1.5, 2.5, 3.5]]))
    pruner = _pruner("state", model, CFG, 0.5, 100, variant=variant)
    pruner.prepare()
    opt = torch.optim.Adam(model.parameters())
    ones = torch.ones(2, 4)
    opt.state[model.fc.weight] = {"step": torch.tensor(3.0), "exp_avg": ones, "exp_avg_sq": ones.clone()}
    pruner.attach(opt)
    pruner.update_mask(0.5)
    return model.fc.weight_mask.tolist()


@pytest.mark.parametrize("variant", ["bitter8", "bitter9"])
def test_coupling_rows_of_one_linear_get_the_coupling_weight(variant):
    # scores |w|: the mlp row x 1.0 = 1, 2, 3, 4; the coupling row x 3.0 = 1.5, 4.5, 7.5, 10.5. The four lowest
    # are 1, 1.5, 2 and 3: the mlp row keeps one weight, the coupling row three.
    assert _row_role_mask(variant) == [[False, False, False, True], [False, True, True, True]]
    # bitter3 (bitter8 without weights): the lowest are 0.5, 1, 1.5 and 2: two each
    assert _row_role_mask("bitter3") == [[False, False, True, True], [False, False, True, True]]


def test_row_roles_must_cover_the_rows():
    pruner = _pruner("state", _TwoRoleRows((1, 2)), CFG, 0.5, 100, variant="bitter8")
    pruner.prepare()
    with pytest.raises(ValueError, match="the roles of fc cover 3 rows, it has 2"):
        pruner.structural_weights()


def test_gpt2_reciprocal_mlp_declares_its_coupling_rows():
    from models.gpt2.model import GPT2, GPT2Config

    model = GPT2(GPT2Config(n_layer=1, n_head=2, n_embd=8, block_size=4, vocab_size=64, rmlp_fraction=0.25))
    assert model.module_roles()["transformer.h.0.mlp.c_fc"] == (("mlp", 24), ("coupling", 8))  # FC1 is 32 wide
    pruner = _pruner("state", model, CFG, 0.5, 100, variant="bitter8")
    pruner.prepare()
    names = [name for name, _ in pruner.modules]
    fc1 = pruner.structural_weights()[names.index("transformer.h.0.mlp.c_fc")]
    assert fc1.shape == (32, 1) and fc1[:24].eq(1.0).all() and fc1[24:].eq(3.0).all()


@pytest.mark.parametrize(
    ("symbol", "value", "allowed"),
    [
        ("ADAMWPRUNE_BUDGET_SCALE_LONG", "0.9", "a number >= 1"),
        ("ADAMWPRUNE_WEIGHT_ATTENTION", "0", "a number > 0"),
        ("ADAMWPRUNE_WEIGHT_MLP", "-1", "a number > 0"),
        ("ADAMWPRUNE_WEIGHT_COUPLING", "strong", "a number > 0"),
    ],
)
def test_bad_knob_values_are_one_clear_error(symbol: str, value: str, allowed: str) -> None:
    with pytest.raises(UserError, match=re.escape(f"{symbol}={value!r} is not allowed: must be {allowed}")):
        cfgmod.from_defaults(("OPTIMIZER_ADAMWPRUNE=y", f"{symbol}={value}"))


def test_the_dense_baseline_needs_pruning_none() -> None:
    message = "ADAMWPRUNE_DENSE_BASELINE=y did not take effect (it depends on PRUNING_NONE"
    with pytest.raises(UserError, match=re.escape(message)):
        cfgmod.from_defaults(("OPTIMIZER_ADAMWPRUNE=y", "PRUNING_NONE=n", "ADAMWPRUNE_DENSE_BASELINE=y"))
