"""Magnitude pruning (Han et al. 2015): keep the weights of largest ``|W|``, globally or per layer
(``PRUNING_SCOPE``), on the gradual cubic schedule of Zhu & Gupta 2017."""

from __future__ import annotations

import torch

from lib.pruning.base import PRUNERS, Pruner


@PRUNERS.register("magnitude")
class MagnitudePruner(Pruner):
    @torch.no_grad()
    def update_mask(self, sparsity: float) -> None:
        # One layer's scores at a time (callables), with already-pruned weights pinned to stay pruned.
        fns = [self.keep_pruned(lambda w=m.weight: w.detach().abs().float(), m.weight_mask) for _, m in self.modules]
        self.keep_top(fns, sparsity)
