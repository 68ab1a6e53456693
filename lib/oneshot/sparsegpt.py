"""SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot",
arXiv:2301.00774): prune a Linear and update its remaining weights so that its outputs on the calibration tokens
change as little as possible.

Per layer it approximately solves ``min ‖WX - ŴX‖²`` (X: in × tokens here) over Ŵ with the target sparsity,
whose Hessian is ``H = 2XXᵀ/N`` (``LayerStats.hessian``). Optimal Brain Surgeon: pruning ``w_q`` from a row and
moving the row's other weights optimally costs ``w_q² / [H⁻¹]_qq`` and updates the row by
``-(w_q / [H⁻¹]_qq) · H⁻¹[q, :]``. SparseGPT visits the columns left to right; once column ``j`` is fixed it is
never moved again, so the update of column ``j`` only uses the inverse Hessian of the columns ``j..in-1``. All
those inverses are rows of one matrix, the upper Cholesky factor ``U`` of ``H⁻¹`` (``H⁻¹ = UᵀU``):

    err_j      = (W[:, j] - Ŵ[:, j]) / U_jj          (Ŵ[:, j]: W[:, j] with its pruned entries set to 0)
    W[:, j:]  -= err_j · U[j, j:]

Steps, as in the paper (Algorithm 1):

1. Dead inputs (``H_ii == 0``: input ``i`` is zero on every calibration token) get ``H_ii = 1`` and ``W[:, i] = 0``.
2. Dampening: ``λ · mean(diag H)`` is added to the diagonal (``λ = percdamp``), so that ``H`` is invertible.
3. ``U = cholesky(H⁻¹, upper)`` (both factorisations in float64; a failure raises one error naming the fix).
4. Columns are processed in blocks of ``blocksize``: the per-column updates touch only the block; the block's
   errors then update every later column at once (lazy batch updates, one matrix product per block).
5. Adaptive mask selection. Unstructured: when a block starts, its mask is chosen from the scores
   ``W_ij² / U_jj²`` of the whole block (rows × block columns, the weights as updated so far): the lowest are
   pruned. Each block prunes ``round(s·out·end) - round(s·out·start)`` entries (``start``, ``end``: its columns),
   so every block is at the target fraction and the layer at exactly ``round(s·out·in)``; ties are pruned in
   index order. N:M: at every ``m``-th column the ``n`` of the next ``m`` columns with the highest scores are
   kept in each row (:func:`lib.pruning.patterns.nm_mask`), from the weights updated up to that column.

Kept weights change: that reconstruction is what SparseGPT adds over magnitude and Wanda.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lib.errors import UserError
from lib.oneshot import ONESHOT, LayerStats, OneShotMethod
from lib.oneshot.magnitude import check_target
from lib.pruning.patterns import nm_mask


@ONESHOT.register("sparsegpt")
class SparseGPT(OneShotMethod):
    NEEDS_HESSIAN = True

    @dataclass(frozen=True)
    class Settings:
        percdamp: float = 0.01  # λ: λ·mean(diag H) is added to H's diagonal (the paper's 1%)
        blocksize: int = 128  # columns per lazy batch update and per unstructured mask selection

        def __post_init__(self) -> None:
            if not self.percdamp >= 0:
                raise UserError(f"SparseGPT percdamp must be >= 0 (a fraction of mean(diag H)), got {self.percdamp}")
            if self.blocksize < 1:
                raise UserError(f"SparseGPT blocksize must be a positive number of columns, got {self.blocksize}")

    @torch.no_grad()
    def prune(
        self, weight: torch.Tensor, stats: LayerStats, sparsity: float, pattern: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_target(weight, sparsity, pattern)
        rows, cols = weight.shape
        blocksize = self.settings.blocksize
        if pattern is not None:
            n, m = pattern
            if not 1 <= n <= m or cols % m or blocksize % m:
                raise UserError(
                    f"SparseGPT {n}:{m} on a ({rows}, {cols}) weight needs 1 <= N <= M, M dividing the {cols} inputs "
                    f"and the blocksize ({blocksize}): pick a blocksize that is a multiple of {m}, or another pattern"
                )
        w = weight.detach().to(torch.float32, copy=True)
        hessian = stats.hessian.to(weight.device, torch.float64, copy=True)  # (in, in), ours to change
        diag = hessian.diagonal()  # a view: writes go to the Hessian
        dead = diag == 0
        diag[dead] = 1.0
        w[:, dead] = 0.0
        diag += self.settings.percdamp * diag.mean()
        u = self._inverse_cholesky(hessian, weight.shape).to(torch.float32)  # (in, in), upper
        d = u.diagonal()  # (in,)

        mask = torch.ones_like(w, dtype=torch.bool)
        for start in range(0, cols, blocksize):
            end = min(start + blocksize, cols)
            block = w[:, start:end]  # (out, B): a view, updated in place
            block_mask = mask[:, start:end]
            errors = torch.zeros_like(block)  # (out, B)
            if pattern is None:
                count = round(sparsity * rows * end) - round(sparsity * rows * start)
                if count > 0:
                    scores = (block / d[start:end]).square().reshape(-1)  # (out * B,), row-major
                    lowest = torch.sort(scores, stable=True).indices[:count]
                    block_mask[lowest // (end - start), lowest % (end - start)] = False
            for j in range(end - start):
                col = start + j
                if pattern is not None and col % pattern[1] == 0:
                    group = slice(j, j + pattern[1])
                    block_mask[:, group] = nm_mask((block[:, group] / d[col : col + pattern[1]]).square(), *pattern)
                kept = torch.where(block_mask[:, j], block[:, j], 0.0)  # (out,)
                err = (block[:, j] - kept) / u[col, col]
                block[:, j + 1 :] -= err.unsqueeze(1) * u[col, col + 1 : end].unsqueeze(0)  # (out, 1) * (1, B - j - 1)
                block[:, j] = kept
                errors[:, j] = err
            w[:, end:] -= errors @ u[start:end, end:]  # (out, B) @ (B, in - end): the lazy batch update
        return w.to(weight.dtype), mask

    def _inverse_cholesky(self, hessian: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """The upper Cholesky factor of ``hessian⁻¹``, or one :class:`UserError` saying why there is none."""
        lower, info = torch.linalg.cholesky_ex(hessian)
        if not info:
            upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
            if not info:
                return upper
        raise UserError(
            f"SparseGPT: the damped Hessian H = 2XᵀX/N of a {tuple(shape)} weight is not positive definite, so its "
            f"Cholesky factorisation failed (too few calibration tokens for {shape[1]} inputs, or inputs that are "
            f"nearly linear combinations of each other); raise percdamp (now {self.settings.percdamp}), e.g. to 0.1, "
            "or calibrate on more tokens"
        )
