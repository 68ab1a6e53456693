"""The pruning base: find masks (methods) vs. use them (training loop, kernels).

Life cycle: ``prepare()`` registers one ``torch.bool`` buffer ``weight_mask`` on every prunable module (so
masks travel in the model's ``state_dict`` and load strictly); around every optimizer step the loop calls
``before_step()`` (gradients of pruned weights zeroed, so momentum cannot resurrect them) and ``after_step()``
(pruned weights set to exactly zero in place, and, on the schedule's update steps, new masks from
:meth:`Pruner.update_mask`). A method implements ``update_mask`` only. There is never a second copy of the
weights: the contract is a dense weight with zeros plus a bool mask. The one exception is a method whose
published definition keeps the values of masked weights (Sanh et al.'s movement pruning): it sets
``zero_pruned = False`` and applies the mask in the forward pass, and the weights that count are ``W ⊙ M``
(:func:`effective_nonzero`: achieved sparsity, export by :meth:`Pruner.squash` or :func:`squash_state`).

Settings. A method reads its knobs once, at the boundary: ``Pruner.Settings.from_config(cfg, axes)`` (the run's
config and matrix axes) gives a frozen :class:`PruningSettings`, and the pruner takes only that. A method with
knobs of its own declares a subclass of the settings (``StateSettings``, ``NMSettings``, ``BandedSettings``)
whose ``read`` adds its fields; benchmarks and tests build settings directly, without a config.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lib.pruning.schedule import ScheduleSettings
from lib.registry import Registry

logger = logging.getLogger(__name__)

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class PruningSettings:
    """What every pruning method reads. ``target`` is the run's ``target_sparsity`` axis; with 0 there is no
    schedule (``none``, and banded, whose sparsity the band widths set)."""

    target: float = 0.0
    scope: str = "global"  # PRUNING_SCOPE: one threshold over all layers ("global") or each layer on its own
    exclude_head: bool = False  # PRUNING_EXCLUDE_HEAD
    exclude_first_conv: bool = False  # PRUNING_EXCLUDE_FIRST_CONV
    schedule: ScheduleSettings | None = None  # None: no gradual schedule
    budget_scale: float = 1.0  # factor on the run's training length (AdamWPrune bitter2 spends saved compute)

    @classmethod
    def from_config(cls, cfg, axes: Mapping[str, Any]) -> PruningSettings:
        return cls(**cls.read(cfg, axes))

    @classmethod
    def read(cls, cfg, axes: Mapping[str, Any]) -> dict[str, Any]:
        """The field values from a config and a run's axes; a method's settings extend the dict with theirs."""
        target = axes.get("target_sparsity") or 0.0
        fields = {"exclude_head": cfg["PRUNING_EXCLUDE_HEAD"], "exclude_first_conv": cfg["PRUNING_EXCLUDE_FIRST_CONV"]}
        if target:  # the scope and schedule symbols are visible (and set) only with a sparsity-producing method
            fields |= {"target": target, "scope": cfg["PRUNING_SCOPE"], "schedule": ScheduleSettings.from_config(cfg)}
        return fields


def prunable_modules(model: nn.Module, settings: PruningSettings) -> list[tuple[str, nn.Module]]:
    """Linear and convolution modules whose ``weight`` may be pruned, in definition order, less the output
    head and the first convolution when the settings exclude them. The head is the Linear whose weight is tied
    to an embedding (GPT-2's ``lm_head``), or else the last Linear."""
    modules = [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    linears = [m for _, m in modules if isinstance(m, nn.Linear)]
    convs = [m for _, m in modules if not isinstance(m, nn.Linear)]
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    tied = [m for m in linears if id(m.weight) in embeddings]
    excluded = set()
    if settings.exclude_head and linears:
        excluded.add(id((tied or linears)[-1]))
    if settings.exclude_first_conv and convs:
        excluded.add(id(convs[0]))
    return [(name, m) for name, m in modules if id(m) not in excluded]


def sparsity_of(model: nn.Module, settings: PruningSettings) -> float:
    """Achieved sparsity: the fraction of exact zeros over all prunable weights, as the forward pass uses them."""
    return zero_fraction([m for _, m in prunable_modules(model, settings)])


def effective_nonzero(module: nn.Module) -> torch.Tensor:
    """A tensor that is non-zero where ``module``'s weight, as the forward pass uses it, is: ``W ⊙ weight_mask``
    as a bool tensor (one byte per weight, never a float copy) where the module has a mask, else ``W`` itself.
    Where pruned weights are zero (every method but Sanh's movement) that is where ``W`` is not zero."""
    mask = getattr(module, "weight_mask", None)
    return module.weight if mask is None else torch.logical_and(module.weight, mask)


@torch.no_grad()
def zero_fraction(modules: Sequence[nn.Module]) -> float:
    """The fraction of exact zeros over the effective weights of ``modules``, read back with one device sync."""
    total = sum(m.weight.numel() for m in modules)
    if not total:
        return 0.0
    nonzero = torch.stack([torch.count_nonzero(effective_nonzero(m)) for m in modules]).sum()
    return (total - int(nonzero)) / total


@torch.no_grad()
def squash_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A model ``state_dict`` for export or inference: each masked weight multiplied by its ``weight_mask``
    (a method that keeps masked values, movement, has them non-zero), the masks dropped."""
    masks = {k.removesuffix("_mask"): v for k, v in state.items() if k.endswith("weight_mask")}
    return {k: v * masks[k] if k in masks else v for k, v in state.items() if not k.endswith("weight_mask")}


class Pruner:
    """Base class. Subclasses implement :meth:`update_mask`; ``none`` overrides nothing and prunes nothing."""

    # The matrix axes and rules the method adds (lib.spec.Axis / Rule), collected by lib.matrix.
    AXES: tuple = ()
    RULES: tuple = ()

    Settings: ClassVar[type[PruningSettings]] = PruningSettings  # what the method reads, from_config(cfg, axes)

    def __init__(self, model: nn.Module, settings: PruningSettings, total_steps: int) -> None:
        self.model = model
        self.settings = settings
        self.target = settings.target
        self.schedule = settings.schedule.build(self.target, total_steps) if settings.schedule and self.target else None
        self.modules: list[tuple[str, nn.Module]] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.reapply_every_step = True
        # Pruned weights are set to exactly zero. False: the method keeps their values and applies the masks in
        # the forward pass instead (movement pruning as Sanh et al. define it, where a pruned weight can return).
        self.zero_pruned = True
        self.seconds = 0.0  # wall time spent in pruning (mask updates and masking), for the summary
        # The modules sparsity() counts zeros over, fixed now: kernels may later swap them for their own modules.
        self._counted = [m for _, m in prunable_modules(model, settings)]

    def attach(self, optimizer: torch.optim.Optimizer, elementwise: bool = True) -> None:
        """The optimizer whose per-weight state is zeroed where weights are pruned (and read by ``state``).

        ``elementwise``: each weight's update depends only on its own gradient and state (SGD, the Adam
        family, SPAM). With masked gradients and zeroed state such an optimizer cannot move a pruned weight
        off zero (every term is a multiple of 0), so weights are re-masked only when masks change. Optimizers
        that mix entries (Muon's orthogonalisation) get weights re-masked after every step.
        """
        self.optimizer = optimizer
        self.reapply_every_step = not elementwise

    def param_state(self, p: torch.Tensor) -> dict:
        """The optimizer's state for ``p`` (empty before its first step)."""
        if self.optimizer is None:
            return {}
        return self.optimizer.state.get(p, {})

    @property
    def active(self) -> bool:
        return self.schedule is not None

    def prepare(self) -> None:
        """Register one bool mask per prunable weight; ``constant`` schedules set their masks now."""
        if not self.active:
            return
        self.modules = prunable_modules(self.model, self.settings)
        for _, m in self.modules:
            m.register_buffer("weight_mask", torch.ones_like(m.weight, dtype=torch.bool))
        s = self.schedule
        logger.info(
            "pruning %d layers (%d weights) to %.1f%%, %s schedule from step %d to %d every %d",
            len(self.modules),
            sum(m.weight.numel() for _, m in self.modules),
            100 * self.target,
            s.kind,
            s.start,
            s.end,
            s.interval,
        )
        if s.at_start:
            self._update(s.final)

    @torch.no_grad()
    def _update(self, sparsity: float) -> None:
        self.update_mask(sparsity)
        # Moments of newly pruned weights are zeroed once; with their gradients masked from then on they
        # stay exactly zero (beta * 0 + (1 - beta) * 0), so the per-step cost is one masked write.
        for _, m in self.modules:
            for value in self.param_state(m.weight).values():
                if torch.is_tensor(value) and value.shape == m.weight.shape:
                    value.mul_(m.weight_mask)
            if self.zero_pruned:
                m.weight.mul_(m.weight_mask)

    @torch.no_grad()
    def before_step(self) -> None:
        tick = time.perf_counter()
        # mul_ by the bool mask: one read of the mask, no negated copy (4x faster than masked_fill_(~mask)).
        for _, m in self.modules:
            if m.weight.grad is not None:
                m.weight.grad.mul_(m.weight_mask)
        self.seconds += time.perf_counter() - tick

    @torch.no_grad()
    def after_step(self) -> None:
        if not self.active:  # no schedule: static masks (banded) still need re-masking after mixing optimizers
            if self.modules and self.reapply_every_step:
                for _, m in self.modules:
                    m.weight.mul_(m.weight_mask)
            return
        tick = time.perf_counter()
        self.schedule.step()
        step = self.schedule.last_step
        if self.schedule.is_update_step(step):
            self._update(self.schedule.sparsity(step))
        elif self.reapply_every_step and self.zero_pruned:
            for _, m in self.modules:
                m.weight.mul_(m.weight_mask)
        self.seconds += time.perf_counter() - tick

    @torch.no_grad()
    def squash(self) -> None:
        """Make the pruning permanent: weights become ``W ⊙ M`` (exact zeros where pruned), the mask buffers are
        removed (for export; a run being trained keeps its masks so that it can resume)."""
        for _, m in self.modules:
            m.weight.mul_(m.weight_mask)
            del m.weight_mask
        self.modules = []

    def sparsity(self) -> float:
        """Achieved sparsity over every prunable weight of the model (pruned by this method or not), as the
        model was built (the prunable modules are looked up once, before any kernel takes one over): the exact
        zeros of the weights the forward pass uses, ``W ⊙ M`` (:func:`effective_nonzero`)."""
        return zero_fraction(self._counted)

    def layer_sparsity(self) -> dict[str, float]:
        """Fraction of exact zeros of ``W ⊙ M`` per pruned layer, by module name."""
        n = {name: m.weight.numel() for name, m in self.modules}
        return {name: (n[name] - int(effective_nonzero(m).count_nonzero())) / n[name] for name, m in self.modules}

    def mask_bytes(self) -> int:
        return sum(m.weight_mask.numel() * m.weight_mask.element_size() for _, m in self.modules)

    @staticmethod
    def keep_pruned(score: Callable[[], torch.Tensor], mask: torch.Tensor) -> Callable[[], torch.Tensor]:
        """Scores with already-pruned entries pinned to -inf: gradual schedules only ever add to the pruned set
        (otherwise a weight that is exactly zero could be "kept" while a live one is cut)."""
        return lambda: score().masked_fill(~mask, -math.inf)

    def keep_top(self, fns: list[Callable[[], torch.Tensor]], sparsity: float) -> None:
        """Set the masks from per-layer score callables: one threshold over all layers (``PRUNING_SCOPE``
        global) or each layer to ``sparsity`` on its own (per layer). Higher scores are kept."""
        masks = [m.weight_mask for _, m in self.modules]
        if self.settings.scope == "global":
            global_keep(fns, masks, sparsity)
        else:
            for fn, mask in zip(fns, masks, strict=True):
                global_keep([fn], [mask], sparsity)

    def update_mask(self, sparsity: float) -> None:
        """Set every ``m.weight_mask`` in place so that ``sparsity`` of the prunable weights are pruned."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"schedule": self.schedule.state_dict() if self.schedule else None, "seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        if self.schedule is not None:
            self.schedule.load_state_dict(state["schedule"])
        self.seconds = state["seconds"]


# PRUNING_<NAME> in Kconfig -> PRUNERS["<name>"]: each method's module registers its class; ``none`` is this base
# class itself (no masks, no schedule, nothing to do).
PRUNERS: Registry[type[Pruner]] = Registry("pruning method", "PRUNING", menu_order=True)
PRUNERS.register("none")(Pruner)


def _as_fn(score: torch.Tensor | Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    return score if callable(score) else (lambda: score)


@torch.no_grad()
def global_keep(
    scores: Sequence[torch.Tensor | Callable[[], torch.Tensor]],
    masks: Sequence[torch.Tensor],
    sparsity: float,
    bins: int = 1 << 16,
    gather_limit: int = 1 << 20,
) -> None:
    """Prune exactly ``round(sparsity * n)`` of the ``n`` scored entries (the lowest), keep the rest.

    Scores may be given as callables that compute one layer's scores on demand, so that at most one layer's
    fp32 scores exist at a time: a global threshold over a 124M-parameter model never materialises a second
    124M-entry tensor. The threshold is found exactly, by histogram refinement: count the scores per bin over
    [lo, hi], keep the bin that holds the k-th smallest, narrow [lo, hi] to it and repeat until that bin holds
    at most ``gather_limit`` scores, then sort just those. The error bound is zero: the result is the set a
    full sort would give, with ties at the threshold pruned in layer order, then element order.
    Cost: one pass for the range, one per refinement (usually one), one to gather the bin, one for the masks.
    """
    fns = [_as_fn(s) for s in scores]
    n = sum(m.numel() for m in masks)
    n_prune = round(sparsity * n)
    if n_prune <= 0 or n_prune >= n:
        for m in masks:
            m.fill_(n_prune <= 0)
        return
    # -inf marks entries that must stay pruned (already pruned by a previous mask update).
    lo, hi, pinned = math.inf, -math.inf, 0
    for fn in fns:
        s = fn().float()
        finite = s[s > -math.inf]
        pinned += s.numel() - finite.numel()
        if finite.numel():
            mn, mx = torch.aminmax(finite)
            lo, hi = min(lo, float(mn)), max(hi, float(mx))
    if n_prune <= pinned:
        _assign(fns, masks, -math.inf, n_prune)
        return
    need = n_prune - pinned  # how many of the scores in [lo, hi] are still to be pruned
    first = pinned == 0
    while True:
        width = (hi - lo) / bins if hi > lo else 0.0
        counts = torch.zeros(bins, dtype=torch.int64)
        for fn in fns:
            s = fn().float().reshape(-1)
            if not first:
                s = s[(s >= lo) & (s <= hi)]
            counts += torch.bincount(_bin(s, lo, width, bins).cpu(), minlength=bins)
        cum = torch.cumsum(counts, 0)
        b = int(torch.searchsorted(cum, torch.tensor(need)))
        before = int(cum[b - 1]) if b > 0 else 0
        if counts[b] <= gather_limit or width == 0.0:
            break
        need -= before
        lo, hi = lo + b * width, (lo + (b + 1) * width if b < bins - 1 else hi)
        first = False
    values = []
    for fn in fns:
        s = fn().float().reshape(-1)
        s = s[(s >= lo) & (s <= hi)]
        values.append(s[_bin(s, lo, width, bins) == b])
    in_bin = torch.sort(torch.cat(values).cpu()).values
    k = need - before  # the threshold is the k-th smallest score in the bin
    threshold = float(in_bin[k - 1])
    _assign(fns, masks, threshold, k - int((in_bin < threshold).sum()))


def _assign(
    fns: list[Callable[[], torch.Tensor]], masks: Sequence[torch.Tensor], threshold: float, ties_left: int
) -> None:
    """Everything below ``threshold`` is pruned; ``ties_left`` entries equal to it too, in order."""
    for fn, m in zip(fns, masks, strict=True):
        s = fn().float()
        keep = s > threshold
        if ties_left > 0:
            tie = (s == threshold).reshape(-1).nonzero().reshape(-1)
            spare = tie[ties_left:]  # ties beyond the quota are kept
            keep.reshape(-1)[spare] = True
            ties_left -= min(ties_left, tie.numel())
        else:
            keep |= s == threshold
        m.copy_(keep)


def _bin(values: torch.Tensor, lo: float, width: float, bins: int) -> torch.Tensor:
    if width == 0.0:
        return torch.zeros_like(values, dtype=torch.int64)
    return ((values - lo) / width).floor().long().clamp_(0, bins - 1)
