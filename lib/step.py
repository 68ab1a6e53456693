"""One optimizer step, exactly as the training loop takes it; tests and benchmarks call the same functions.

:func:`train_step` = :func:`accumulate` (gradients of the mean loss over the step's micro-batches) then
:func:`update` (mask the gradients, clip, step, re-mask or update masks, advance the LR schedule). A benchmark
of the optimizer alone, on fixed gradients, calls :func:`update`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

Loss = Callable[[nn.Module, Any], torch.Tensor]


def accumulate(
    forward: nn.Module,
    micro_batches: Sequence,
    loss: Loss,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """Backward of ``loss(forward, micro) / len(micro_batches)`` for each micro-batch (gradient accumulation:
    the mean of their gradients); returns the detached mean loss.

    A DDP-wrapped ``forward`` averages gradients over the processes once, on the last micro-batch."""
    no_sync = getattr(forward, "no_sync", None)
    last = len(micro_batches) - 1
    total = None
    for i, micro in enumerate(micro_batches):
        with contextlib.nullcontext() if no_sync is None or i == last else no_sync():
            with autocast():
                part = loss(forward, micro) / len(micro_batches)
            part.backward()
        total = part.detach() if total is None else total + part.detach()
    return total


def update(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    pruner=None,
    clip_grad_norm: float = 0.0,
    schedule=None,
) -> None:
    """The optimizer step with its hooks: ``pruner.before_step`` (masks gradients), gradient-norm clipping
    over ``model``'s parameters, ``optimizer.step``, ``pruner.after_step`` (re-masks weights or updates the
    masks), ``schedule.step`` (the next step's learning rate)."""
    if pruner is not None:
        pruner.before_step()
    if clip_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    optimizer.step()
    if pruner is not None:
        pruner.after_step()
    if schedule is not None:
        schedule.step()


def train_step(
    model: nn.Module,
    micro_batches: Sequence,
    loss: Loss,
    optimizer: torch.optim.Optimizer,
    *,
    forward: nn.Module | None = None,
    pruner=None,
    clip_grad_norm: float = 0.0,
    schedule=None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> torch.Tensor:
    """One training step on ``micro_batches``; returns the detached loss (the mean over the micro-batches).

    ``forward`` is the module that computes the loss when it is not ``model`` itself (compiled, or wrapped
    for DDP); ``model`` holds the parameters that are clipped."""
    optimizer.zero_grad(set_to_none=True)
    total = accumulate(model if forward is None else forward, micro_batches, loss, autocast)
    update(model, optimizer, pruner, clip_grad_norm, schedule)
    return total
