"""Block-banded MLP layers: the Linears a banded pruner masked, computed over their band's tiles only.

A layer is taken over when its ``weight_mask`` is exactly ``banded_mask(out, in, w)`` for some band width
``w > 0`` (derived from the mask: the largest kept offset ``|j - i·r|`` on the wide side); other masks are
logged and left dense. The computation is :mod:`kernels.banded.reference` (pure PyTorch, batched small GEMMs
over the tiles that meet the band): the CPU path, and the path everywhere until a GPU kernel exists.
``BANDED_KERNEL_BLOCK`` sets the tile's extent on the wide side.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from kernels import KERNELS, Kernel
from kernels.banded.reference import BandedLinear
from lib.pruning.patterns import banded_mask

logger = logging.getLogger(__name__)


def band_width_of(mask: torch.Tensor) -> int | None:
    """The band width ``w > 0`` with ``mask == banded_mask(out, in, w)``, or None when there is none (a dense,
    empty or non-banded mask, or a shape whose wide side is not a multiple of its narrow side)."""
    out_features, in_features = mask.shape
    wide, narrow = max(mask.shape), min(mask.shape)
    if wide % narrow or bool(mask.all()) or not bool(mask.any()):
        return None
    fc1 = mask if out_features >= in_features else mask.t()  # (wide, narrow): the band is |j - i·r| <= w / 2
    j, i = fc1.nonzero(as_tuple=True)
    reach = int((j - i * (wide // narrow)).abs().max())
    for width in (2 * reach, 2 * reach + 1):  # an odd width keeps the same offsets as the even one below it
        if width and torch.equal(banded_mask(out_features, in_features, width), mask.cpu()):
            return width
    return None


@KERNELS.register("banded")
class BandedKernel(Kernel):
    """Swaps every MLP Linear with a banded ``weight_mask`` for a :class:`BandedLinear`."""

    PURPOSES = ("train", "inference")

    @dataclass(frozen=True)
    class Settings:
        block: int = 32  # BANDED_KERNEL_BLOCK: tile extent on the wide side, in channels

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or self.Settings()

    @classmethod
    def from_config(cls, cfg) -> BandedKernel:
        return cls(cls.Settings(block=cfg["BANDED_KERNEL_BLOCK"]))

    def apply(self, model: nn.Module, purpose: str, device: torch.device) -> list[str]:
        mlp = {id(m) for pair in getattr(model, "mlp_layers", lambda: [])() for m in pair}
        taken = []
        for name, module in list(model.named_modules()):
            if id(module) not in mlp or type(module) is not nn.Linear:
                continue
            mask = getattr(module, "weight_mask", None)
            width = None if mask is None else band_width_of(mask)
            if width is None:
                logger.info("banded kernel: %s has no banded mask; left dense", name)
                continue
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, BandedLinear(module, self.settings.block))
            taken.append(name)
            logger.info("banded kernel: %s (%dx%d, band width %d)", name, *mask.shape, width)
        return taken
