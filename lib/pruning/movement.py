"""Movement pruning (Sanh, Wolf & Rush 2020, "Movement Pruning: Adaptivity by Fine-Tuning"), the hard top-k
variant. The forward pass uses ``W' = W ⊙ M`` with ``M = Top_k(S)``, and the scores follow the
straight-through estimator ``∂L/∂S = ∂L/∂W' ⊙ W`` for every weight, pruned ones included:

    S = - sum_t  W_t ⊙ ∂L/∂W'_t            (accumulated every step; the paper scales it by the learning rate)

so a pruned weight whose score rises back above the threshold returns at the next mask update, with the value it
kept while masked. The masks keep the highest S (globally or per layer, ``PRUNING_SCOPE``) on the pruning
schedule. Unlike magnitude pruning it needs no copy of the initial weights, only S: one fp32 tensor per
prunable weight, saved with the pruner so a resumed run continues the same sums.

How it runs without a second copy of the weights. Each pruned Linear or convolution gets an instance
``forward`` that computes ``W ⊙ M`` on the fly (a transient tensor, freed after the backward, as in the
paper's own code) through :class:`_StraightThrough`, whose backward hands ``∂L/∂W'`` to ``W.grad`` unmasked.
So after the backward ``W.grad`` holds ``∂L/∂W'`` everywhere (summed over micro-batches, averaged over DDP ranks
like any gradient); :meth:`MovementPruner.before_step` adds ``-W ⊙ W.grad`` to S, then masks ``W.grad`` in place
(the base class), which leaves ``∂L/∂W = ∂L/∂W' ⊙ M``: a masked weight gets no gradient. Its optimizer moments
are zeroed when it is pruned (the base class), so an elementwise optimizer does not move it either; weight
decay does (decoupled or not, it acts on every parameter), and so does an optimizer that mixes entries (Muon).
Masked weights are never zeroed: achieved sparsity counts the zeros of ``W ⊙ M``, and :meth:`Pruner.squash`
(or :func:`lib.pruning.base.squash_state`) multiplies ``W`` by ``M`` for export. A kernel that takes over a
pruned module must apply the mask itself.

``PRUNING_MOVEMENT_FROZEN`` keeps the earlier behaviour instead: pruned weights set to exactly zero, their scores
pinned to -inf at each update (the masks only grow), the plain forward pass.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lib.pruning.base import PRUNERS, Pruner, PruningSettings, prunable_modules


@dataclass(frozen=True)
class MovementSettings(PruningSettings):
    """Whether pruned weights are frozen (``PRUNING_MOVEMENT_FROZEN``): zeroed and never revived."""

    frozen: bool = False

    @classmethod
    def read(cls, cfg, axes: Mapping[str, Any]) -> dict[str, Any]:
        return super().read(cfg, axes) | {"frozen": cfg["PRUNING_MOVEMENT_FROZEN"]}


class _StraightThrough(torch.autograd.Function):
    """``W ⊙ M`` forward; backward passes ``∂L/∂W'`` to ``W`` unmasked (the pruner takes the scores from it, then
    masks it). Saves nothing for the backward."""

    @staticmethod
    def forward(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return weight * mask

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def _masked_linear(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, _StraightThrough.apply(self.weight, self.weight_mask), self.bias)


def _masked_conv(self: nn.modules.conv._ConvNd, x: torch.Tensor) -> torch.Tensor:
    return self._conv_forward(x, _StraightThrough.apply(self.weight, self.weight_mask), self.bias)


@PRUNERS.register("movement")
class MovementPruner(Pruner):
    Settings = MovementSettings
    settings: MovementSettings

    def __init__(self, model: nn.Module, settings: MovementSettings, total_steps: int) -> None:
        super().__init__(model, settings, total_steps)
        self.zero_pruned = settings.frozen

    def prepare(self) -> None:
        # Scores exist before a constant schedule sets its masks in super().prepare().
        self.scores: dict[str, torch.Tensor] = {}
        if self.active:
            self.scores = {
                name: torch.zeros_like(m.weight, dtype=torch.float32)
                for name, m in prunable_modules(self.model, self.settings)
            }
        super().prepare()
        if not self.zero_pruned:
            # A bound method (not a closure), so that a deep copy of the model masks its own weights.
            for _, m in self.modules:
                m.forward = types.MethodType(_masked_linear if isinstance(m, nn.Linear) else _masked_conv, m)

    @torch.no_grad()
    def before_step(self) -> None:
        for name, m in self.modules:
            if m.weight.grad is not None:
                # S -= W * dL/dW' in one fused pass, no temporary; frozen: W is 0 where pruned, S stays
                self.scores[name].addcmul_(m.weight.detach(), m.weight.grad, value=-1.0)
        super().before_step()

    @torch.no_grad()
    def update_mask(self, sparsity: float) -> None:
        fns = [lambda s=self.scores[name]: s for name, _ in self.modules]
        if self.settings.frozen:
            fns = [self.keep_pruned(fn, m.weight_mask) for fn, (_, m) in zip(fns, self.modules, strict=True)]
        self.keep_top(fns, sparsity)

    @torch.no_grad()
    def squash(self) -> None:
        for _, m in self.modules:
            m.__dict__.pop("forward", None)  # the module's own forward again, on W ⊙ M
        super().squash()

    def state_dict(self) -> dict:
        return {**super().state_dict(), "scores": {k: v.clone() for k, v in self.scores.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        for name, value in state["scores"].items():
            self.scores[name].copy_(value)
