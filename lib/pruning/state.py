"""State pruning (AdamWPrune): importance scores from the optimizer's own Adam moments, no extra score tensors.

Each variant ("bitter0".."bitter9", the ``ADAMWPRUNE_VARIANTS`` axis) scores a weight from ``W``, the first
moment ``m`` (exp_avg) and the second moment ``v`` (exp_avg_sq), as the AdamWPrune write-ups define them
(``docs/optimizers.md`` lists the formulas). Signs are chosen so that a weight Adam is pushing toward zero
(``sign(W) == sign(m)``: the update ``-lr*m/sqrt(v)`` shrinks ``|W|``) scores low and is pruned first. Before the
optimizer has state (no step yet) every variant falls back to ``|W|``. Structure-aware variants (bitter8/9)
multiply a layer's scores by the structural weight of its role (attention, MLP, coupling), which the model
declares with ``module_roles()``: a role per module, or per run of output rows where one Linear plays two roles
(GPT-2's reciprocal MLP: the FC1 rows that also read the attention output are "coupling"). Scores are
computed one layer at a time and the global threshold is exact without materialising all scores at once
(:func:`lib.pruning.base.global_keep`).
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
    score: Callable[..., torch.Tensor]  # (w, m, v, eps) -> scores, all fp32, same shape as w
    layer_adaptive: bool = False  # bitter4: per-layer targets s*(0.7 + 0.6*l/(L-1)), capped
    structural: bool = False  # bitter8/9: a layer's scores times the structural weight of its role
    budget: str | None = None  # the float knob the run's training length is multiplied by (bitter2, bitter3/4)


VARIANTS: Registry[Variant] = Registry("AdamWPrune variant (ADAMWPRUNE_VARIANTS)", "ADAMWPRUNE_VARIANT")
LAYER_ADAPTIVE_CAP = 0.95  # no layer of bitter4 is pruned beyond this, whatever the target
ROLES = ("attention", "mlp", "coupling")  # what a model's module_roles() may call a module
# What module_roles() gives a module: one role, or (role, rows) runs that cover its output rows in order.
Role = str | tuple[tuple[str, int], ...]


def _bitter0(w, m, v, eps):
    return (w * m).abs() * w.abs() / (v.sqrt() + eps)


def _magnitude(w, m, v, eps):
    return w.abs()


def _bitter3(w, m, v, eps):
    return w.abs() * (m.abs() + eps).sqrt()


def _bitter5(w, m, v, eps):
    return -torch.sign(w) * m / (v.sqrt() + eps) + 0.1 * w.abs()


def _bitter6(w, m, v, eps):
    return w.abs() * m.abs().sqrt() * (m * m / (v + eps)).sqrt()


def _bitter7(w, m, v, eps):
    return w.abs() * (v.pow(0.25) + eps)  # eps outside the root, as published


for _name, _variant in {
    "bitter0": Variant(_bitter0),
    "bitter1": Variant(_magnitude),
    "bitter2": Variant(_magnitude, budget="ADAMWPRUNE_BUDGET_SCALE"),
    "bitter3": Variant(_bitter3, budget="ADAMWPRUNE_BUDGET_SCALE_LONG"),
    "bitter4": Variant(_bitter3, layer_adaptive=True, budget="ADAMWPRUNE_BUDGET_SCALE_LONG"),
    "bitter5": Variant(_bitter5),
    "bitter6": Variant(_bitter6),
    "bitter7": Variant(_bitter7),
    "bitter8": Variant(_bitter3, structural=True),
    "bitter9": Variant(_bitter7, structural=True),
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
    """The run's AdamWPrune variant (its ``variant`` axis), the Adam epsilon its scores use and the structural
    weights of bitter8/9 (``ADAMWPRUNE_WEIGHT_*``)."""

    variant: str = "bitter0"
    eps: float = 1e-8  # ADAM_EPS
    attention_weight: float = 2.5
    mlp_weight: float = 1.0
    coupling_weight: float = 3.0

    def structural_weight(self, role: Role | None) -> float | torch.Tensor:
        """The factor on the scores of a module with ``role`` (one of :data:`ROLES`); 1.0 without a role. For
        runs of rows, ``((role, rows), ...)``, a column (sum of rows, 1) of the runs' factors."""
        if role is None:
            return 1.0
        if not isinstance(role, str):
            return torch.cat([torch.full((rows, 1), float(self.structural_weight(r))) for r, rows in role])
        if role not in ROLES:
            raise ValueError(f"module role {role!r} is not one of {', '.join(ROLES)}")
        return {"attention": self.attention_weight, "mlp": self.mlp_weight, "coupling": self.coupling_weight}[role]

    @classmethod
    def read(cls, cfg, axes: Mapping[str, Any]) -> dict[str, Any]:
        variant = axes.get("variant") or "bitter0"
        budget = VARIANTS[variant].budget
        return super().read(cfg, axes) | {
            "variant": variant,
            "eps": cfg["ADAM_EPS"],
            "budget_scale": cfg[budget] if budget else 1.0,
            "attention_weight": cfg["ADAMWPRUNE_WEIGHT_ATTENTION"],
            "mlp_weight": cfg["ADAMWPRUNE_WEIGHT_MLP"],
            "coupling_weight": cfg["ADAMWPRUNE_WEIGHT_COUPLING"],
        }


@PRUNERS.register("state")
class StatePruner(Pruner):
    """The ``state`` pruning method: masks from an AdamWPrune variant's scores.

    It owns AdamWPrune's matrix axis (``variant``, after the optimizer) and the rules that pair the
    ``adamwprune`` optimizer with this method (or with ``none``, its dense baseline, when asked for).
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
            "adamwprune prunes with its own moments: it runs with pruning 'state', or 'none' for its dense baseline",
            applies=lambda a, c: a["optimizer"] == "adamwprune" and a["pruning"] not in ("state", "none"),
        ),
        Rule(
            "adamwprune with pruning 'none' is its base optimizer, dense: set ADAMWPRUNE_DENSE_BASELINE to run it",
            applies=lambda a, c: (
                a["optimizer"] == "adamwprune" and a["pruning"] == "none" and not c["ADAMWPRUNE_DENSE_BASELINE"]
            ),
        ),
        Rule(
            "the dense AdamWPrune baseline scores nothing: one run, not one per variant",
            applies=lambda a, c: a["optimizer"] == "adamwprune" and a["pruning"] == "none" and a["variant"] is not None,
            collapse=lambda a: {**a, "variant": None},
        ),
        Rule(
            "pruning 'state' reads AdamWPrune's moments: it runs with optimizer adamwprune only",
            applies=lambda a, c: a["pruning"] == "state" and a["optimizer"] != "adamwprune",
        ),
    )

    Settings = StateSettings
    settings: StateSettings

    def structural_weights(self) -> list[float | torch.Tensor]:
        """Per pruned layer, in order, the structural weight of the role the model gives its module
        (``model.module_roles()``: module name -> "attention", "mlp" or "coupling", or runs of rows with
        those roles: then a column of per-row weights); 1.0 for a module the model does not name, and
        everywhere for a model that declares no roles."""
        roles = self.model.module_roles() if hasattr(self.model, "module_roles") else {}
        weights = []
        for name, module in self.modules:
            weight = self.settings.structural_weight(roles.get(name))
            if isinstance(weight, torch.Tensor):
                if len(weight) != module.weight.shape[0]:
                    raise ValueError(f"the roles of {name} cover {len(weight)} rows, it has {module.weight.shape[0]}")
                weight = weight.to(module.weight.device)
            weights.append(weight)
        return weights

    def _score_fn(self, w: torch.Tensor, variant: Variant, weight: float | torch.Tensor) -> Callable[[], torch.Tensor]:
        state = self.param_state(w)
        eps = self.settings.eps

        def score() -> torch.Tensor:
            if "exp_avg" not in state or "exp_avg_sq" not in state:
                return w.detach().abs().float()
            return variant.score(w.detach().float(), state["exp_avg"].float(), state["exp_avg_sq"].float(), eps)

        if isinstance(weight, float) and weight == 1.0:
            return score
        return lambda: weight * score()

    @torch.no_grad()
    def update_mask(self, sparsity: float) -> None:
        variant = VARIANTS[self.settings.variant]
        weights = self.structural_weights() if variant.structural else [1.0] * len(self.modules)
        masks = [m.weight_mask for _, m in self.modules]
        fns = [
            self.keep_pruned(self._score_fn(m.weight, variant, k), m.weight_mask)
            for (_, m), k in zip(self.modules, weights, strict=True)
        ]
        if variant.layer_adaptive:
            scale = sparsity / self.target if self.target else 0.0  # follow the schedule toward each layer's target
            for i, (fn, mask) in enumerate(zip(fns, masks, strict=True)):
                global_keep([fn], [mask], scale * layer_sparsity(self.target, i, len(masks)))
        else:
            self.keep_top(fns, sparsity)


__all__ = ["VARIANTS", "StatePruner", "StateSettings", "layer_sparsity"]
