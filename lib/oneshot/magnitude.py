"""One-shot magnitude pruning, the baseline of the Wanda and SparseGPT papers: keep the weights of largest
``|W_ij|`` in each layer, with no calibration data (the statistics are ignored).

Unstructured: exactly ``round(sparsity * out * in)`` entries of the layer are pruned, by one threshold over the
whole layer (:func:`lib.pruning.base.global_keep`: ties at the threshold are pruned in element order); or, with
``ONESHOT_MAGNITUDE_PER_ROW``, ``round(sparsity * in)`` in every output row (Wanda's comparison group, the
ablation that separates Wanda's scores from its grouping). N:M: the ``n`` largest ``|W_ij|`` of every ``m``
consecutive inputs of each row (:func:`lib.pruning.patterns.nm_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass

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


def prune_lowest_per_row(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Bool mask (the shape of ``scores``, 2-D) that prunes the ``count`` lowest scores of every row; among equal
    scores the lower index is pruned first (a stable sort)."""
    mask = torch.ones_like(scores, dtype=torch.bool)
    if count > 0:
        lowest = torch.sort(scores, dim=1, stable=True).indices[:, :count]  # (out, count)
        mask.scatter_(1, lowest, False)
    return mask


def prune_lowest(scores: torch.Tensor, sparsity: float, per_row: bool) -> torch.Tensor:
    """Bool mask of the kept entries: the lowest ``sparsity`` of ``scores`` pruned in each row (``per_row``, exactly
    ``round(sparsity * in)`` each) or over the whole layer (exactly ``round(sparsity * out * in)``)."""
    if per_row:
        return prune_lowest_per_row(scores, round(sparsity * scores.shape[1]))
    mask = torch.ones_like(scores, dtype=torch.bool)
    global_keep([scores], [mask], sparsity)
    return mask


@ONESHOT.register("magnitude")
class Magnitude(OneShotMethod):
    @dataclass(frozen=True)
    class Settings:
        per_row: bool = False  # ONESHOT_MAGNITUDE_PER_ROW: compare within each output row, not over the layer

    @torch.no_grad()
    def prune(
        self, weight: torch.Tensor, stats: LayerStats, sparsity: float, pattern: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_target(weight, sparsity, pattern)
        scores = weight.abs()
        if pattern is not None:
            mask = nm_mask(scores, *pattern)
        else:
            mask = prune_lowest(scores, sparsity, self.settings.per_row)
        return torch.where(mask, weight, 0.0), mask
