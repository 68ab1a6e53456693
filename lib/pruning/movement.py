"""Movement pruning (Sanh, Wolf & Rush 2020, "Movement Pruning: Adaptivity by Fine-Tuning"), the hard top-k
variant: the importance of a weight is how far training has moved it away from zero,

    S = - sum_t  W_t * dL/dW_t            (accumulated every step, before gradients are masked)

and the masks keep the weights of highest S (globally or per layer, ``PRUNING_SCOPE``) on the pruning
schedule. Unlike magnitude pruning it needs no copy of the initial weights, only S: one fp32 tensor per
prunable weight, which is saved with the pruner so a resumed run continues the same sums.
"""

from __future__ import annotations

import torch

from lib.pruning.base import PRUNERS, Pruner, prunable_modules


@PRUNERS.register("movement")
class MovementPruner(Pruner):
    def prepare(self) -> None:
        # Scores exist before a constant schedule sets its masks in super().prepare().
        self.scores: dict[str, torch.Tensor] = {}
        if self.active:
            self.scores = {
                name: torch.zeros_like(m.weight, dtype=torch.float32)
                for name, m in prunable_modules(self.model, self.settings)
            }
        super().prepare()

    @torch.no_grad()
    def before_step(self) -> None:
        for name, m in self.modules:
            if m.weight.grad is not None:
                # S -= W * g in one fused pass, no temporary
                self.scores[name].addcmul_(m.weight.detach(), m.weight.grad, value=-1.0)
        super().before_step()

    @torch.no_grad()
    def update_mask(self, sparsity: float) -> None:
        fns = [self.keep_pruned(lambda s=self.scores[name]: s, m.weight_mask) for name, m in self.modules]
        self.keep_top(fns, sparsity)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "scores": {k: v.clone() for k, v in self.scores.items()}}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        for name, value in state["scores"].items():
            self.scores[name].copy_(value)
