"""Wanda, "pruning by weights and activations" (Sun, Liu, Bair & Kolter 2023, "A Simple and Effective Pruning
Approach for Large Language Models", arXiv:2306.11695).

Each weight is scored by its magnitude times the norm of the input it multiplies over the calibration tokens,

    S_ij = |W_ij| · ‖X_j‖₂        (X: tokens × in, ‖X_j‖₂ from ``LayerStats.norms``),

and the scores are compared within each output row (the paper's per-output comparison group, which it finds
better than per-layer for LLMs): every row loses exactly ``round(sparsity * in)`` entries, its lowest scores
(ties pruned in index order); ``ONESHOT_WANDA_PER_LAYER`` compares over the whole layer instead (the
paper's comparison-group ablation). N:M: the ``n`` highest scores of every ``m`` consecutive inputs of each row
(:func:`lib.pruning.patterns.nm_mask`). Kept weights are not changed: no weight update, no Hessian.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lib.oneshot import ONESHOT, LayerStats, OneShotMethod
from lib.oneshot.magnitude import check_target, prune_lowest
from lib.pruning.patterns import nm_mask


@ONESHOT.register("wanda")
class Wanda(OneShotMethod):
    @dataclass(frozen=True)
    class Settings:
        per_layer: bool = False  # ONESHOT_WANDA_PER_LAYER: compare over the whole layer (the paper's ablation)

    @torch.no_grad()
    def prune(
        self, weight: torch.Tensor, stats: LayerStats, sparsity: float, pattern: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_target(weight, sparsity, pattern)
        scores = weight.abs() * stats.norms.to(weight.device).unsqueeze(0)  # (out, in) * (1, in)
        if pattern is not None:
            mask = nm_mask(scores, *pattern)
        else:
            mask = prune_lowest(scores, sparsity, per_row=not self.settings.per_layer)
        return torch.where(mask, weight, 0.0), mask
