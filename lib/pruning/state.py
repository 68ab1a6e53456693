"""State pruning (AdamWPrune): importance scores from the optimizer's own Adam moments, no extra score tensors.

Each variant ("bitter0".."bitter9", the ``ADAMWPRUNE_VARIANTS`` axis) scores a weight from ``W``, the first
moment ``m`` (exp_avg), the second moment ``v`` (exp_avg_sq) and the step count. Signs are chosen so that a
weight Adam is pushing toward zero (``sign(W) == sign(m)``: the update ``-lr*m/sqrt(v)`` shrinks ``|W|``)
scores low and is pruned first. Before the optimizer has state (no step yet) every variant falls back to
``|W|``. Scores are computed one layer at a time and the global threshold is exact without materialising all
scores at once (:func:`lib.pruning.base.global_keep`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from lib.pruning.base import PRUNERS, Pruner, PruningSettings, global_keep
from lib.registry import Registry
from lib.spec import Axis, Rule


@dataclass(frozen=True)
class Variant:
    score: Callable[..., torch.Tensor]  # (w, m, v, eps, bias1) -> scores, all fp32, same shape as w
    layer_adaptive: bool = False  # bitter4: per-layer targets s*(0.7 + 0.6*l/(L-1)), capped
    scaled_budget: bool = False  # bitter2: the run trains ADAMWPRUNE_BUDGET_SCALE times longer


VARIANTS: Registry[Variant] = Registry("AdamWPrune variant (ADAMWPRUNE_VARIANTS)", "ADAMWPRUNE_VARIANT")
LAYER_ADAPTIVE_CAP = 0.95  # no layer of bitter4 is pruned beyond this, whatever the target


def _bitter0(w, m, v, eps, bias1):
    return (w * m).abs() * w.abs() / (v.sqrt() + eps)


def _magnitude(w, m, v, eps, bias1):
    return w.abs()


def _bitter3(w, m, v, eps, bias1):
    return w.abs() * (m.abs() + eps).sqrt()


def _bitter5(w, m, v, eps, bias1):
    return -torch.sign(w) * m / (v.sqrt() + eps) + 0.1 * w.abs()


def _bitter6(w, m, v, eps, bias1):
    return w.abs() * m.abs().sqrt() * (m * m / (v + eps)).sqrt()


def _bitter7(w, m, v, eps, bias1):
    return w.abs() * (v + eps).pow(0.25)


def _bitter8(w, m, v, eps, bias1):
    return w.abs() * (m / bias1).abs().sqrt()


def _bitter9(w, m, v, eps, bias1):
    return w.abs() * m.abs().sqrt() - 0.1 * torch.sign(w) * m / (v.sqrt() + eps)


for _name, _variant in {
    "bitter0": Variant(_bitter0),
    "bitter1": Variant(_magnitude),
    "bitter2": Variant(_magnitude, scaled_budget=True),
    "bitter3": Variant(_bitter3),
    "bitter4": Variant(_bitter3, layer_adaptive=True),
    "bitter5": Variant(_bitter5),
    "bitter6": Variant(_bitter6),
    "bitter7": Variant(_bitter7),
    "bitter8": Variant(_bitter8),
    "bitter9": Variant(_bitter9),
}.items():
    VARIANTS.register(_name)(_variant)


def layer_sparsity(target: float, index: int, layers: int) -> float:
    """bitter4: later layers pruned harder, ``s * (0.7 + 0.6 * l / (L - 1))``, capped."""
    position = index / (layers - 1) if layers > 1 else 0.5
    return min(LAYER_ADAPTIVE_CAP, target * (0.7 + 0.6 * position))


def _variants(cfg) -> list[str]:
    """ADAMWPRUNE_VARIANTS, each checked against the registry (an unknown name lists the allowed ones)."""
    for name in cfg["ADAMWPRUNE_VARIANTS"]:
        VARIANTS[name]
    return list(cfg["ADAMWPRUNE_VARIANTS"])


@dataclass(frozen=True)
class StateSettings(PruningSettings):
    """The run's AdamWPrune variant (its ``variant`` axis) and the Adam epsilon its scores divide by."""

    variant: str = "bitter0"
    eps: float = 1e-8  # ADAM_EPS

    @classmethod
    def read(cls, cfg, axes: Mapping[str, Any]) -> dict[str, Any]:
        variant = axes.get("variant") or "bitter0"
        scale = cfg["ADAMWPRUNE_BUDGET_SCALE"] if VARIANTS[variant].scaled_budget else 1.0
        return super().read(cfg, axes) | {"variant": variant, "eps": cfg["ADAM_EPS"], "budget_scale": scale}


@PRUNERS.register("state")
class StatePruner(Pruner):
    """The ``state`` pruning method: masks from an AdamWPrune variant's scores.

    It owns AdamWPrune's matrix axis (``variant``, after the optimizer) and the rules that pair the
    ``adamwprune`` optimizer with this method.
    """

    AXES = (
        Axis(
            "variant",
            lambda c: _variants(c) if c["OPTIMIZER_ADAMWPRUNE"] else [None],
            label=lambda v: v or "",
            after="optimizer",
        ),
    )
    RULES = (
        Rule(
            "AdamWPrune variants apply to the adamwprune optimizer only",
            applies=lambda a, c: a["variant"] is not None and a["optimizer"] != "adamwprune",
            collapse=lambda a: {**a, "variant": None},
        ),
        Rule(
            "adamwprune prunes with its own moments: it runs with pruning 'state' only",
            applies=lambda a, c: a["optimizer"] == "adamwprune" and a["pruning"] != "state",
        ),
        Rule(
            "pruning 'state' reads AdamWPrune's moments: it runs with optimizer adamwprune only",
            applies=lambda a, c: a["pruning"] == "state" and a["optimizer"] != "adamwprune",
        ),
    )

    Settings = StateSettings
    settings: StateSettings

    def _score_fn(self, w: torch.Tensor, variant: Variant) -> Callable[[], torch.Tensor]:
        state = self.param_state(w)
        if "exp_avg" not in state or "exp_avg_sq" not in state:
            return lambda: w.detach().abs().float()
        beta1 = self.optimizer.param_groups[0]["betas"][0] if self.optimizer is not None else 0.9
        step = float(state.get("step", 1))
        bias1 = 1.0 - beta1 ** max(step, 1.0)
        eps = self.settings.eps
        return lambda: variant.score(
            w.detach().float(), state["exp_avg"].float(), state["exp_avg_sq"].float(), eps, bias1
        )

    @torch.no_grad()
    def update_mask(self, sparsity: float) -> None:
        variant = VARIANTS[self.settings.variant]
        weights = [m.weight for _, m in self.modules]
        masks = [m.weight_mask for _, m in self.modules]
        fns = [self.keep_pruned(self._score_fn(w, variant), m) for w, m in zip(weights, masks, strict=True)]
        if variant.layer_adaptive:
            scale = sparsity / self.target if self.target else 0.0  # follow the schedule toward each layer's target
            for i, (fn, mask) in enumerate(zip(fns, masks, strict=True)):
                global_keep([fn], [mask], scale * layer_sparsity(self.target, i, len(masks)))
        else:
            self.keep_top(fns, sparsity)


__all__ = ["VARIANTS", "StatePruner", "StateSettings", "layer_sparsity"]
