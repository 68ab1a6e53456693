"""The structured pruning methods: N:M semi-structured and banded (static) masks, on the base's machinery.

N:M keeps N of every M consecutive input weights of each output row by ``|W|`` (``PRUNING_NM_PATTERN``,
2:4 or 4:8: 50% sparsity either way); on a gradual schedule the number of zeros per group grows with the
schedule and ends at M − N. Layers whose flattened input size is not a multiple of M stay dense (logged).

Banded puts a static diagonal band on transformer-MLP layers (the run's ``fc1_band`` on C → rC layers and
``fc2_band`` on rC → C ones, axes from ``BANDED_FC1_BANDWIDTHS`` / ``_FC2_``; 0 = dense): the masks are set
before the first step and never change. The formula is in :mod:`lib.pruning.patterns`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lib.errors import UserError
from lib.pruning.base import PRUNERS, Pruner, PruningSettings, prunable_modules
from lib.pruning.patterns import band_density, banded_mask, nm_mask_partial
from lib.spec import Axis, Rule

logger = logging.getLogger(__name__)

NM_PATTERNS = {"2_4": (2, 4), "4_8": (4, 8)}  # PRUNING_NM_PATTERN_<N>_<M> -> (N, M)


@dataclass(frozen=True)
class NMSettings(PruningSettings):
    """N kept of every M consecutive input weights (``PRUNING_NM_PATTERN``)."""

    n: int = 2
    m: int = 4

    @classmethod
    def read(cls, cfg, axes: Mapping[str, Any]) -> dict[str, Any]:
        n, m = NM_PATTERNS[cfg["PRUNING_NM_PATTERN"]]
        return super().read(cfg, axes) | {"n": n, "m": m}


@PRUNERS.register("nm")
class NMPruner(Pruner):
    Settings = NMSettings
    settings: NMSettings
    RULES = (
        Rule(
            "N:M sparsity is fixed by its pattern: (M-N)/M = 50%",
            applies=lambda a, c: a["pruning"] == "nm" and a["target_sparsity"] != 0.5,
            collapse=lambda a: {**a, "target_sparsity": 0.5},
        ),
    )

    def prepare(self) -> None:
        self.n, self.m = self.settings.n, self.settings.m
        super().prepare()
        fits = [(name, mod) for name, mod in self.modules if mod.weight[0].numel() % self.m == 0]
        for name, mod in self.modules:
            if mod.weight[0].numel() % self.m:
                logger.info(
                    "N:M: %s stays dense (input size %d is not a multiple of %d)", name, mod.weight[0].numel(), self.m
                )
                del mod.weight_mask
        if not fits:
            raise UserError(
                f"PRUNING_NM: no prunable layer has an input size that is a multiple of {self.m}; "
                "choose another pattern or pruning method"
            )
        self.modules = fits

    @torch.no_grad()
    def update_mask(self, sparsity: float) -> None:
        zeros = round((self.m - self.n) * sparsity / self.target) if self.target else 0
        for _, mod in self.modules:
            scores = mod.weight.detach().abs().float().masked_fill(~mod.weight_mask, float("-inf"))
            mod.weight_mask.copy_(nm_mask_partial(scores, self.n, self.m, zeros))


@dataclass(frozen=True)
class BandedSettings(PruningSettings):
    """The run's band widths (its ``fc1_band`` and ``fc2_band`` axes); 0 leaves that layer kind dense."""

    fc1_band: int = 0
    fc2_band: int = 0

    @classmethod
    def read(cls, cfg, axes: Mapping[str, Any]) -> dict[str, Any]:
        return super().read(cfg, axes) | {"fc1_band": axes.get("fc1_band") or 0, "fc2_band": axes.get("fc2_band") or 0}


@PRUNERS.register("banded")
class BandedPruner(Pruner):
    """Static band on MLP layers with an integer expansion ratio; no schedule and no target sparsity."""

    Settings = BandedSettings
    settings: BandedSettings

    AXES = (
        Axis(
            "fc1_band",
            lambda c: list(c["BANDED_FC1_BANDWIDTHS"]) if c.get("PRUNING_BANDED") else [None],
            label=lambda v: f"fc1b{v}" if v else "",
            after="target_sparsity",
        ),
        Axis(
            "fc2_band",
            lambda c: list(c["BANDED_FC2_BANDWIDTHS"]) if c.get("PRUNING_BANDED") else [None],
            label=lambda v: f"fc2b{v}" if v else "",
            after="target_sparsity",
        ),
    )
    RULES = (
        Rule(
            "band widths apply to pruning 'banded' only",
            applies=lambda a, c: a["pruning"] != "banded" and (a["fc1_band"] is not None or a["fc2_band"] is not None),
            collapse=lambda a: {**a, "fc1_band": None, "fc2_band": None},
        ),
        Rule(
            "banded with both widths 0 is the dense run (pruning 'none')",
            applies=lambda a, c: a["pruning"] == "banded" and not a["fc1_band"] and not a["fc2_band"],
        ),
        Rule(
            "without BANDED_FULL_GRID, FC1 and FC2 are banded together only at equal widths",
            applies=lambda a, c: (
                a["pruning"] == "banded"
                and not c.get("BANDED_FULL_GRID")
                and bool(a["fc1_band"])
                and bool(a["fc2_band"])
                and a["fc1_band"] != a["fc2_band"]
            ),
        ),
        Rule(
            "banded sparsity is set by the band widths, not by a target",
            applies=lambda a, c: a["pruning"] == "banded" and a["target_sparsity"] != 0.0,
            collapse=lambda a: {**a, "target_sparsity": 0.0},
        ),
    )

    def prepare(self) -> None:
        bandwidths = {"fc1": self.settings.fc1_band, "fc2": self.settings.fc2_band}
        self.modules = []
        # A model that knows its MLPs says so (``mlp_layers()``: (fc1, fc2) pairs); otherwise any Linear with an
        # integer expansion ratio is taken for one.
        declared = {}
        for fc1, fc2 in getattr(self.model, "mlp_layers", lambda: [])():
            declared[id(fc1)], declared[id(fc2)] = "fc1", "fc2"
        for name, mod in prunable_modules(self.model, self.settings):
            out, inp = mod.weight.shape[0], mod.weight[0].numel()
            if declared:
                kind = declared.get(id(mod))
            else:
                kind = (
                    "fc1"
                    if isinstance(mod, nn.Linear) and out > inp and out % inp == 0
                    else ("fc2" if isinstance(mod, nn.Linear) and inp > out and inp % out == 0 else None)
                )
            if kind is None or bandwidths[kind] == 0:
                continue
            mask = banded_mask(out, inp, bandwidths[kind]).to(mod.weight.device)
            mod.register_buffer("weight_mask", mask)
            with torch.no_grad():
                mod.weight.mul_(mask)
            self.modules.append((name, mod))
            logger.info(
                "banded %s (%s, %dx%d, bandwidth %d): density %.4f",
                name,
                kind,
                out,
                inp,
                bandwidths[kind],
                band_density(mask),
            )
        if not self.modules:
            raise UserError(
                "PRUNING_BANDED: no Linear layer with an integer expansion ratio (C -> rC or rC -> C) "
                "and a non-zero FC1 / FC2 band width (BANDED_FC1_BANDWIDTHS / BANDED_FC2_BANDWIDTHS); banded is for "
                "transformer MLPs"
            )

    def update_mask(self, sparsity: float) -> None:
        raise AssertionError("banded masks are static")
