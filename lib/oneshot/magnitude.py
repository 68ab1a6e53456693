"""One-shot magnitude pruning, the baseline of the Wanda and SparseGPT papers: keep the weights of largest
``|W_ij|`` in each layer, with no calibration data (the statistics are ignored).

Unstructured: exactly ``round(sparsity * out * in)`` entries of the layer are pruned, by one threshold over the
whole layer (:func:`lib.pruning.base.global_keep`: ties at the threshold are pruned in element order). N:M: the
``n`` largest ``|W_ij|`` of every ``m`` consecutive inputs of each row (:func:`lib.pruning.patterns.nm_mask`).
"""

from __future__ import annotations

import torch

from lib.oneshot import ONESHOT, LayerStats, OneShotMethod
from lib.pruning.base import global_keep
from lib.pruning.patterns import nm_mask


def check_target(weight: torch.Tensor, sparsity: float, pattern: tuple[int, int] | None) -> None:
    """What every one-shot method asks of its arguments: a 2-D weight and, without a pattern, 0 <= sparsity < 1
    (the pattern itself is checked by :func:`nm_mask`)."""
    if weight.dim() != 2:
        raise ValueError(f"one-shot pruning takes a Linear's (out, in) weight, got shape {tuple(weight.shape)}")
    if pattern is None and not 0 <= sparsity < 1:
        raise ValueError(f"one-shot sparsity is the fraction of weights pruned, 0 <= sparsity < 1; got {sparsity}")


@ONESHOT.register("magnitude")
class Magnitude(OneShotMethod):
    @torch.no_grad()
    def prune(
        self, weight: torch.Tensor, stats: LayerStats, sparsity: float, pattern: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_target(weight, sparsity, pattern)
        scores = weight.abs()
        if pattern is not None:
            mask = nm_mask(scores, *pattern)
        else:
            mask = torch.ones_like(weight, dtype=torch.bool)
            global_keep([scores], [mask], sparsity)
        return torch.where(mask, weight, 0.0), mask
