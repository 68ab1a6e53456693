"""One-shot pruning (issue 16): prune a trained model's Linears once, from calibration inputs, without training.

A method is one module ``lib/oneshot/<name>.py`` that registers a :class:`OneShotMethod` subclass in
:data:`ONESHOT` (Kconfig ``ONESHOT_<NAME>``) and implements :meth:`OneShotMethod.prune`: given a Linear's
weight (out, in), the statistics of its inputs over the calibration tokens (:class:`LayerStats`), a target
sparsity and an optional N:M pattern, it returns the pruned weight (methods that reconstruct, as SparseGPT
does, change the kept weights too) and the bool mask of kept entries. The pipeline (``lib/oneshot/pipeline.py``)
runs the model's blocks in order, each calibrated on the outputs of the already-pruned blocks before it, and
hands every Linear of a block to the method.

Conventions shared by every method:

- ``sparsity`` is the fraction of entries set to zero, per layer (0 <= sparsity < 1).
- ``pattern = (n, m)`` keeps ``n`` of every ``m`` consecutive inputs of each output row
  (:func:`lib.pruning.patterns.nm_mask`; ``(2, 4)`` is the layout 2:4 sparse tensor cores take); with a
  pattern, ``sparsity`` is ``1 - n / m`` and is ignored.
- ``weight`` comes in fp32 on the device the statistics are on; the returned weight has the same dtype and
  device, is exactly zero outside the mask, and the mask is bool (out, in).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import torch

from lib.registry import Registry, import_members


class LayerStats:
    """What the methods need to know about a Linear's inputs ``X`` (tokens × in), accumulated batch by batch
    with :meth:`add` in fp64 (sums of many fp32 products):

    - ``sq_norms``: ``‖X_j‖₂²`` per input column ``j`` (Wanda's ``‖X_j‖₂`` is its square root);
    - ``hessian`` (when asked for): ``H = 2 XᵀX / N`` (in × in), SparseGPT's layer-wise Hessian.
    """

    def __init__(self, in_features: int, device: torch.device | str = "cpu", hessian: bool = False) -> None:
        self.tokens = 0
        self.sq_norms = torch.zeros(in_features, dtype=torch.float64, device=device)
        self._xtx = torch.zeros(in_features, in_features, dtype=torch.float64, device=device) if hessian else None

    def add(self, x: torch.Tensor) -> None:
        """Accumulate a batch of inputs ``x`` (..., in)."""
        x = x.reshape(-1, x.shape[-1]).to(self.sq_norms.device, torch.float64)
        self.tokens += x.shape[0]
        self.sq_norms += x.square().sum(0)
        if self._xtx is not None:
            self._xtx += x.T @ x

    @property
    def norms(self) -> torch.Tensor:
        """``‖X_j‖₂`` per input column (fp32)."""
        return self.sq_norms.sqrt().float()

    @property
    def hessian(self) -> torch.Tensor:
        """``2 XᵀX / N`` (fp32, in × in); only when the stats were built with ``hessian=True``."""
        if self._xtx is None:
            raise ValueError("these statistics were gathered without the Hessian (LayerStats(..., hessian=True))")
        return (2 * self._xtx / max(self.tokens, 1)).float()


class OneShotMethod:
    """A one-shot pruning method: ``prune`` is the one method to implement. A method with knobs overrides
    ``Settings`` (a frozen dataclass; the fields are read from ``ONESHOT_<NAME>_<FIELD>`` by ``make prune``)."""

    NEEDS_HESSIAN: ClassVar[bool] = False  # the pipeline gathers LayerStats with the Hessian for these

    @dataclass(frozen=True)
    class Settings:
        """No knobs."""

    def __init__(self, settings=None) -> None:
        self.settings = settings or self.Settings()

    @property
    def variant(self) -> str:
        """A suffix naming the settings that differ from the defaults (``+per_layer``, ``+percdamp0.1``; ``""`` at
        the defaults), so results of one method under two settings never share a name or a directory."""
        default = self.Settings()
        parts = []
        for f in fields(self.settings):
            value = getattr(self.settings, f.name)
            if value != getattr(default, f.name):
                text = f"{value:g}" if isinstance(value, float) else "" if value is True else str(value)
                parts.append(f.name + text)
        return "".join(f"+{part}" for part in parts)

    def prune(
        self, weight: torch.Tensor, stats: LayerStats, sparsity: float, pattern: tuple[int, int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(pruned weight, bool mask of kept entries) for ``weight`` (out, in)."""
        raise NotImplementedError


# ONESHOT_<NAME> in Kconfig -> ONESHOT["<name>"]: each method's module registers its class.
ONESHOT: Registry[type[OneShotMethod]] = Registry("one-shot pruning method", "ONESHOT", menu_order=True)

# Last: each method's module imports the base class and the registry from here.
import_members(__name__, __path__)

__all__ = ["ONESHOT", "LayerStats", "OneShotMethod"]
