"""Optimizer registry: ``OPTIMIZER_<NAME>`` in Kconfig -> ``OPTIMIZERS["<name>"]``.

Each entry is a function ``build(model, cfg) -> Setup``: the ``torch.optim.Optimizer`` plus what the shared
training loop must do around it (gradient-norm clipping, a schedule the optimizer insists on). The loop
applies the learning-rate schedule (``lib.optimizers.schedules``) and the clipping the same way for every
optimizer on every model, so neither is ever forgotten on some model's path.

Parameters are grouped the nanoGPT way by :func:`param_groups`: weight decay only on tensors with 2+
dimensions (matmul and conv weights), none on biases and norm parameters.

A new optimizer is one module of this package (every module here is imported with it) holding its builder,
registered with ``@OPTIMIZERS.register("name")``, plus its Kconfig entry; nothing else changes.

Knobs shared by several builders are read once into a small frozen settings object with a ``from_config``
constructor (:class:`AdamMoments`, :class:`SpamSettings`), so the Kconfig names are spelled in one place and the
optimizer classes take plain, typed arguments.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from torch import nn

from lib.registry import Registry, import_members

logger = logging.getLogger(__name__)


@dataclass
class Setup:
    """An optimizer and how the loop drives it."""

    optimizer: torch.optim.Optimizer
    clip_grad_norm: float = 0.0  # max global gradient L2 norm before each step; 0 = no clipping
    schedule: str | None = None  # an LR_SCHEDULE name that overrides the configured one
    elementwise: bool = True  # each weight's update depends on its own gradient and state only (not Muon)


# Listed in the Kconfig menu's order, whatever order the builders register in.
OPTIMIZERS: Registry = Registry("optimizer", "OPTIMIZER", menu_order=True)


def set_peak_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The matrix's lr axis: the reference group's peak learning rate becomes ``lr`` and every group is scaled
    by the same factor, so the ratios between groups (Muon's AdamW part to its Muon part) are kept. The
    reference is the first group marked ``"lr_axis": True`` (Muon with ``MUON_LR_AXIS_ADAMW`` marks its AdamW
    embedding / head group), else the first group. Called before the LR schedule records each group's peak."""
    marked = [g for g in optimizer.param_groups if g.get("lr_axis")]
    peak = (marked or optimizer.param_groups)[0]["lr"]
    for group in optimizer.param_groups:
        for key in ("lr", "base_lr"):
            if key in group:  # groups at the reference's rate get ``lr`` exactly, not ``lr / peak * peak``
                group[key] = lr if group[key] == peak else group[key] * (lr / peak)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed (``dim >= 2``) and not decayed (``dim < 2``); sizes logged once."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    logger.info(
        "parameter groups: %d tensors / %d params with weight decay %g, %d tensors / %d params without",
        len(decay),
        sum(p.numel() for p in decay),
        weight_decay,
        len(no_decay),
        sum(p.numel() for p in no_decay),
    )
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _fused(model: nn.Module) -> dict:
    """``fused=True`` (one kernel for the whole step) when every parameter lives on a CUDA device; elsewhere
    torch's default implementation, so CPU runs are bitwise equal to a plain ``torch.optim`` run."""
    on_cuda = all(p.is_cuda for p in model.parameters())
    return {"fused": True} if on_cuda else {}


@dataclass(frozen=True)
class AdamMoments:
    """The moment settings every Adam-family optimizer shares (``ADAM_FAMILY`` in ``lib/optimizers/Kconfig``)."""

    betas: tuple[float, float]
    eps: float

    @classmethod
    def from_config(cls, cfg) -> AdamMoments:
        return cls(betas=(cfg["ADAM_BETA1"], cfg["ADAM_BETA2"]), eps=cfg["ADAM_EPS"])


@dataclass(frozen=True)
class SpamSettings:
    """AdamWSpam's own knobs (``SPAM_*``); the field names are :class:`~lib.optimizers.spam.AdamWSpam`'s
    keyword arguments."""

    reset_interval: int
    threshold: float
    warmup_steps: int
    clip_skip_steps: int

    @classmethod
    def from_config(cls, cfg) -> SpamSettings:
        return cls(
            reset_interval=cfg["SPAM_RESET_INTERVAL"],
            threshold=cfg["SPAM_THRESHOLD"],
            warmup_steps=cfg["SPAM_WARMUP_STEPS"],
            clip_skip_steps=cfg["SPAM_CLIP_SKIP_STEPS"],
        )


@OPTIMIZERS.register("sgd")
def build_sgd(model: nn.Module, cfg) -> Setup:
    opt = torch.optim.SGD(
        param_groups(model, cfg["SGD_WEIGHT_DECAY"]),
        lr=cfg["SGD_LR"],
        momentum=cfg["SGD_MOMENTUM"],
        nesterov=cfg["SGD_NESTEROV"],
        **_fused(model),
    )
    return Setup(opt, cfg["GRAD_CLIP_NORM"])


@OPTIMIZERS.register("adam")
def build_adam(model: nn.Module, cfg) -> Setup:
    moments = AdamMoments.from_config(cfg)
    opt = torch.optim.Adam(
        param_groups(model, cfg["ADAM_WEIGHT_DECAY"]),
        lr=cfg["ADAM_LR"],
        betas=moments.betas,
        eps=moments.eps,
        **_fused(model),
    )
    return Setup(opt, cfg["GRAD_CLIP_NORM"])


@OPTIMIZERS.register("adamw")
def build_adamw(model: nn.Module, cfg) -> Setup:
    moments = AdamMoments.from_config(cfg)
    opt = torch.optim.AdamW(
        param_groups(model, cfg["ADAMW_WEIGHT_DECAY"]),
        lr=cfg["ADAMW_LR"],
        betas=moments.betas,
        eps=moments.eps,
        **_fused(model),
    )
    return Setup(opt, cfg["GRAD_CLIP_NORM"])


@OPTIMIZERS.register("adamwadv")
def build_adamwadv(model: nn.Module, cfg) -> Setup:
    moments = AdamMoments.from_config(cfg)
    opt = torch.optim.AdamW(
        param_groups(model, cfg["ADAMWADV_WEIGHT_DECAY"]),
        lr=cfg["ADAMWADV_LR"],
        betas=moments.betas,
        eps=moments.eps,
        amsgrad=cfg["ADAMWADV_AMSGRAD"],
        **_fused(model),
    )
    return Setup(opt, cfg["ADAMWADV_CLIP_NORM"], "cosine" if cfg["ADAMWADV_COSINE"] else None)


@OPTIMIZERS.register("adamwspam")
def build_adamwspam(model: nn.Module, cfg) -> Setup:
    from lib.optimizers.spam import AdamWSpam

    moments = AdamMoments.from_config(cfg)
    opt = AdamWSpam(
        param_groups(model, cfg["ADAMWSPAM_WEIGHT_DECAY"]),
        lr=cfg["ADAMWSPAM_LR"],
        betas=moments.betas,
        eps=moments.eps,
        **asdict(SpamSettings.from_config(cfg)),
    )
    return Setup(opt, cfg["GRAD_CLIP_NORM"])


@OPTIMIZERS.register("adamwprune")
def build_adamwprune(model: nn.Module, cfg) -> Setup:
    """The base optimizer (ADAMWPRUNE_BASE); the pruning half is the "state" pruner it is paired with."""
    return OPTIMIZERS[cfg["ADAMWPRUNE_BASE"]](model, cfg)


@OPTIMIZERS.register("muon")
def build_muon_setup(model: nn.Module, cfg) -> Setup:
    from lib.optimizers.muon import build_muon

    moments = AdamMoments.from_config(cfg)
    opt = build_muon(
        model,
        muon_lr=cfg["MUON_LR"],
        muon_weight_decay=cfg["MUON_WEIGHT_DECAY"],
        momentum=cfg["MUON_MOMENTUM"],
        nesterov=cfg["MUON_NESTEROV"],
        ns_steps=cfg["MUON_NS_STEPS"],
        adamw_lr=cfg["ADAMW_LR"],
        adamw_betas=moments.betas,
        adamw_eps=moments.eps,
        adamw_weight_decay=cfg["ADAMW_WEIGHT_DECAY"],
        adjust_lr_fn=cfg["MUON_LR_SCALE"],
    )
    if cfg["MUON_LR_AXIS"] == "adamw":  # the lr axis is the AdamW embedding / head rate (set_peak_lr)
        next(g for g in opt.param_groups if g["optimizer"] == "adamw")["lr_axis"] = True
    # Newton-Schulz mixes every entry of a matrix: pruned weights must be re-masked after each step.
    return Setup(opt, cfg["GRAD_CLIP_NORM"], elementwise=False)


# Last: each optimizer's own module imports the registry and the helpers above from here.
import_members(__name__, __path__)
