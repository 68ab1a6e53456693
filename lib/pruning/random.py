"""Random pruning: the baseline every pruning paper needs. Each mask update prunes uniformly random weights
among those still alive (already-pruned weights stay pruned), globally or per layer, on the schedule. Its
generator is seeded from the run's seed and saved with the pruner, so a resumed run draws the same masks."""

from __future__ import annotations

import torch

from lib.pruning.base import PRUNERS, Pruner


@PRUNERS.register("random")
class RandomPruner(Pruner):
    def prepare(self) -> None:
        self.generator = torch.Generator().manual_seed(torch.initial_seed())  # the run's seed (seed_everything)
        super().prepare()

    @torch.no_grad()
    def update_mask(self, sparsity: float) -> None:
        masks = [m.weight_mask for _, m in self.modules]
        # Drawn once per update (on CPU, so the draw is the same on any device), then reused by every pass
        # of the threshold search.
        draws = [torch.rand(m.weight.shape, generator=self.generator).to(m.weight.device) for _, m in self.modules]
        fns = [self.keep_pruned(lambda d=d: d, mask) for d, mask in zip(draws, masks, strict=True)]
        self.keep_top(fns, sparsity)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["generator"])
