"""Activation-sparse GEMV for decoding (TEAL, CATS, Deja Vu): the projections of each block compute
``sparsify(x, t) Wᵀ + b``, the input channels with ``|x| <= t`` dropped, and at batch 1-4 on a GPU the Triton
GEMV (:mod:`kernels.sparse_gemv.kernel`) skips the weight rows of those channels.

The kernel calibrates: before it swaps anything, :func:`kernels.prepare` hands it a few batches of the model's
own inputs (``make sample``: token ids of the run's validation text), and one dense forward pass over them sets
each layer's threshold to the quantile of ``|x|`` for the target sparsity ``SPARSE_GEMV_TARGET`` %
(:func:`kernels.sparse_gemv.reference.calibrate`). It takes over every plain ``nn.Linear`` the model lists in
``module_roles()`` (GPT-2: the QKV and output projections of attention, its gate if any, FC1 and FC2; not the
head); a Linear with a pruning mask still attached stays as it is (sampling squashes masks before this).
Inference only: the thresholds change the model's outputs, which ``make sample`` reports as a perplexity.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from kernels import KERNELS, Kernel
from kernels.sparse_gemv.reference import SparseGemvLinear, calibrate

logger = logging.getLogger(__name__)


@KERNELS.register("sparse_gemv")
class SparseGemvKernel(Kernel):
    """Swaps the block projections for :class:`SparseGemvLinear` with calibrated thresholds."""

    PURPOSES = ("inference",)
    CALIBRATES = True

    @dataclass(frozen=True)
    class Settings:
        sparsity: float = 0.5  # SPARSE_GEMV_TARGET / 100: target fraction of each layer's inputs dropped

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or self.Settings()
        self.thresholds: dict[str, float] | None = None

    @classmethod
    def from_config(cls, cfg) -> SparseGemvKernel:
        return cls(cls.Settings(sparsity=cfg["SPARSE_GEMV_TARGET"] / 100))

    @staticmethod
    def layers(model: nn.Module) -> dict[str, nn.Linear]:
        """The Linears taken over, by module name: the model's ``module_roles()`` that are plain, unmasked
        ``nn.Linear`` modules."""
        roles = getattr(model, "module_roles", dict)()
        modules = dict(model.named_modules())
        return {
            name: modules[name]
            for name in roles
            if type(modules.get(name)) is nn.Linear and not list(modules[name].buffers(recurse=False))
        }

    def calibrate(self, model: nn.Module, inputs) -> None:
        self.thresholds = calibrate(model, self.layers(model), inputs, self.settings.sparsity)

    def apply(self, model: nn.Module, purpose: str, device: torch.device) -> list[str]:
        if self.thresholds is None:
            raise RuntimeError("sparse_gemv: calibrate(model, inputs) before apply (kernels.prepare does)")
        layers = self.layers(model)
        taken = []
        for name, threshold in self.thresholds.items():
            if name not in layers:
                continue
            module = SparseGemvLinear(layers[name], threshold, self.settings.sparsity)
            model.set_submodule(name, module)
            taken.append(name)
            logger.debug(
                "sparse_gemv: %s (%dx%d), threshold %.4g", name, module.out_features, module.in_features, threshold
            )
        if taken:
            chosen = [self.thresholds[name] for name in taken]
            logger.info(
                "sparse_gemv: target activation sparsity %g%%, thresholds %.3g to %.3g",
                100 * self.settings.sparsity,
                min(chosen),
                max(chosen),
            )
        return taken
