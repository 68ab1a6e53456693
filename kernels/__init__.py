"""Kernels: ``KERNELS_<NAME>`` in Kconfig -> ``KERNELS["<name>"]``, one package ``kernels/<name>/`` per op.

A kernel package holds the kernel itself (``kernel.py``: Triton; or ``*.cu`` built on first use),
``reference.py`` (pure PyTorch: the oracle its tests compare against, and the path wherever the kernel cannot
run), and a :class:`Kernel` subclass registered under its name. Every package under ``kernels/`` is imported
with this one, so adding a kernel touches its own package, its Kconfig entry in ``kernels/Kconfig`` and its
tests, nothing else.

The model is handed to the kernels in one place, :func:`prepare`: by the trainer once the pruner has set its
masks (purpose ``"train"``) and by sampling once the weights are loaded (``"inference"``). A kernel swaps the
modules it accelerates for modules that call it, keeping their parameters and buffers (same names, same
tensors), so the optimizer, the pruner and checkpoints see no difference. A pruning method never calls a
kernel: it sets masks, and the kernels read them. A kernel that approximates the model (``CALIBRATES``: activation
thresholds) first observes it on a few of the model's inputs, which the caller hands to :func:`prepare`.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import kconfiglib
import torch
from torch import nn

from lib.registry import Registry, import_members

logger = logging.getLogger(__name__)

PURPOSES = ("train", "inference")


class Kernel:
    """A kernel's hook into a model. ``from_config`` reads the kernel's knobs (its settings at the boundary);
    ``apply`` swaps modules and returns the names of the modules it took over."""

    PURPOSES: ClassVar[tuple[str, ...]] = PURPOSES  # what the kernel serves: training, inference or both
    CALIBRATES: ClassVar[bool] = False  # observes the model on a few of its inputs (calibrate) before apply

    @classmethod
    def from_config(cls, cfg) -> Kernel:
        return cls()

    def calibrate(self, model: nn.Module, inputs) -> None:
        """Observe ``model`` on ``inputs`` (a few batches of its own inputs on its device, e.g. token ids
        (B, T)) before ``apply``; called by :func:`prepare` for kernels with ``CALIBRATES``, whose ``apply``
        then approximates the model (activation thresholds, say)."""
        raise NotImplementedError

    def apply(self, model: nn.Module, purpose: str, device: torch.device) -> list[str]:
        raise NotImplementedError


# KERNELS_<NAME> in Kconfig -> KERNELS["<name>"]: each kernel's package registers its class.
KERNELS: Registry[type[Kernel]] = Registry("kernel", "KERNELS", menu_order=True)


def selected(cfg, purpose: str) -> list[str]:
    """The kernels ``cfg`` selects that serve ``purpose``, in menu order."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose {purpose!r}: one of {', '.join(PURPOSES)}")
    # .get: a run recorded before a kernel existed did not use it, and resumes without it
    return [n for n in KERNELS.names() if cfg.get(KERNELS.symbol(n)) and purpose in KERNELS[n].PURPOSES]


def inference_symbols(kconf) -> set[str]:
    """The Kconfig names that change only how a trained model is sampled: the bool of every kernel that serves
    inference alone, and every symbol and named choice that depends on one of them (their knobs)."""
    names = {KERNELS.symbol(n) for n in KERNELS.names() if tuple(KERNELS[n].PURPOSES) == ("inference",)}
    items = [item for item in (*kconf.unique_defined_syms, *kconf.unique_choices) if item.name]
    grew = True
    while grew:
        grew = False
        for item in items:
            if item.name not in names and any(
                getattr(dep, "name", None) in names for dep in kconfiglib.expr_items(item.direct_dep)
            ):
                names.add(item.name)
                grew = True
    return names


def calibrating(cfg, purpose: str) -> bool:
    """Some kernel ``cfg`` selects for ``purpose`` calibrates: :func:`prepare` needs ``calibration`` inputs,
    and the model it prepares approximates the one it was given."""
    return any(KERNELS[n].CALIBRATES for n in selected(cfg, purpose))


def prepare(model: nn.Module, cfg, purpose: str, device: torch.device, calibration=None) -> dict[str, list[str]]:
    """Hand ``model`` to every selected kernel that serves ``purpose``, in menu order; what each took over
    (kernel name -> module names), for the run's summary and log. ``calibration``: a few batches of the model's
    inputs on ``device``, needed when :func:`calibrating` (a calibrating kernel sees the model as the kernels
    before it in the menu left it)."""
    taken: dict[str, list[str]] = {}
    for name in selected(cfg, purpose):
        kernel = KERNELS[name].from_config(cfg)
        if kernel.CALIBRATES:
            if calibration is None:
                raise ValueError(f"kernel {name} calibrates on the model's inputs: pass calibration=")
            kernel.calibrate(model, calibration)
        taken[name] = kernel.apply(model, purpose, device)
        logger.info("kernel %s (%s) on %d modules: %s", name, purpose, len(taken[name]), ", ".join(taken[name]))
    return taken


# Last: each kernel's package imports the base class and the registry from here.
import_members(__name__, __path__)

__all__ = ["KERNELS", "Kernel", "calibrating", "inference_symbols", "prepare", "selected"]
