"""Activation-sparse linear in pure PyTorch: the oracle of the Triton kernel, its CPU and prefill path, the
per-layer threshold calibration, and :class:`SparseGemvLinear`, the module that takes over a Linear.

Semantics (one definition, shared with :mod:`kernels.sparse_gemv.kernel`): with ``t`` rounded to fp32,

    sparsify(x, t) = x where |x| > t, else 0          (compared in fp32 or wider: exact for fp16/bf16/fp32 x)
    y = sparsify(x, t) Wᵀ + b

Calibration (TEAL, CATS): a layer's threshold for a target activation sparsity ``s`` is the smallest ``t`` with
``F(t) >= s``, ``F`` the empirical CDF of ``|x|`` over the layer's inputs on a few calibration batches, i.e. the
``ceil(s·n)``-th smallest of the ``n`` observed magnitudes, so at least a fraction ``s`` of the calibration
entries satisfy ``|x| <= t`` (exactly ``s`` when ``s·n`` is whole and the magnitudes are distinct). The
calibration runs the model as it is (dense) once, with forward pre-hooks on the layers; more than
``max_samples`` magnitudes of a layer are subsampled (with a fixed generator) before the quantile.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from kernels import clib
from kernels.runtime import contents_key, grad_needed, use_triton

logger = logging.getLogger(__name__)

MAX_BATCH = 4  # rows the Triton GEMV takes (a decoding batch); more rows are a prefill: reference math
DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # what the Triton GEMV takes


def as_fp32(value: float) -> float:
    """``value`` rounded to the nearest fp32, as a Python float (thresholds are fp32 in the kernel)."""
    return float(np.float32(value))


def sparsify(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """``x`` with the entries ``|x| <= threshold`` set to zero (``threshold`` rounded to fp32; fp16/bf16 compared
    in fp32, where they are exact)."""
    wide = x if x.dtype in (torch.float32, torch.float64) else x.float()
    return torch.where(wide.abs() > as_fp32(threshold), x, torch.zeros((), dtype=x.dtype, device=x.device))


def sparse_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, threshold: float) -> torch.Tensor:
    """``sparsify(x, threshold) Wᵀ + b`` for ``x`` of any shape (..., K): dense math on the sparsified input."""
    return F.linear(sparsify(x, threshold), weight, bias)


def threshold_for(magnitudes: torch.Tensor, sparsity: float) -> float:
    """The smallest ``t`` among ``magnitudes`` (``|x|``, any shape) with at least a fraction ``sparsity`` of them
    ``<= t``: the ``ceil(sparsity·n)``-th smallest. ``sparsity`` 0 gives 0 (only exact zeros dropped: dense)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity {sparsity}: in [0, 1)")
    values = magnitudes.detach().reshape(-1).float()
    if sparsity == 0.0 or values.numel() == 0:
        return 0.0
    # ceil(s·n), with 1e-9 of slack for rounding: 0.3 * 10 is 3.0000000000000004 in binary floating point
    k = min(values.numel(), max(1, math.ceil(sparsity * values.numel() - 1e-9)))
    return float(torch.kthvalue(values.cpu(), k).values)


@torch.no_grad()
def calibrate(
    model: nn.Module, layers: dict[str, nn.Module], inputs, sparsity: float, max_samples: int = 1 << 20
) -> dict[str, float]:
    """Per layer name, the threshold of its input for ``sparsity`` (:func:`threshold_for`), observed on one
    forward pass ``model(inputs)`` in eval mode (the model's training flag is restored)."""
    seen: dict[str, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(0)

    def observe(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            magnitudes = args[0].detach().abs().reshape(-1)
            if name in seen:  # a layer called twice in one pass: both calls count
                magnitudes = torch.cat([seen[name], magnitudes.to(seen[name].device)])
            if magnitudes.numel() > max_samples:
                pick = torch.randint(magnitudes.numel(), (max_samples,), generator=generator)
                magnitudes = magnitudes[pick.to(magnitudes.device)]
            seen[name] = magnitudes

        return hook

    handles = [layer.register_forward_pre_hook(observe(name)) for name, layer in layers.items()]
    was_training = model.training
    try:
        model.eval()
        model(inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    missing = sorted(set(layers) - set(seen))
    if missing:
        raise ValueError(f"calibration never ran {', '.join(missing)}: not used by the model's forward pass")
    return {name: threshold_for(seen[name], sparsity) for name in layers}


class SparseGemvLinear(nn.Module):
    """An ``nn.Linear`` for decoding with its inputs thresholded: ``sparsify(x, threshold) Wᵀ + b``.

    Holds the Linear's ``weight`` and ``bias`` (the same tensors under the same names: the state_dict keys do
    not change; the threshold is a plain float, not a buffer). Inputs of at most :data:`MAX_BATCH` rows, in one
    of :data:`DTYPES` and the weight's dtype, without autograd, on a device Triton runs on
    (:func:`kernels.runtime.use_triton`) go to the Triton GEMV, which reads a transposed contiguous copy of
    the weight (made on first use, remade when the weight changes in place or moves; it doubles the layer's
    weight memory on that device) and adds its split-K partial sums in the layer's workspace (``4 · N`` fp32
    and ``N`` int32, zero between calls: one call at a time per layer). On the CPU the same inputs in float32
    or float64 go to the C kernel (:mod:`kernels.sparse_gemv.cpu`), which reads the same copy. Everything else
    (a prefill of many tokens, training, other dtypes on the CPU) is :func:`sparse_linear`: the same semantics
    in dense math.
    """

    def __init__(self, linear: nn.Linear, threshold: float, sparsity: float) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.threshold = as_fp32(threshold)
        self.sparsity = sparsity  # the calibrated target: the kernel's autotune bin (a host constant)
        self._weight_t: torch.Tensor | None = None
        self._key: tuple | None = None
        self.kept: int | None = None  # input channels the last call of the CPU kernel kept
        self._workspace = None  # the Triton kernel's split-K sums and counters (kernel.Workspace), on its device

    def weight_t(self) -> torch.Tensor:
        """Wᵀ (K, N), contiguous, as the kernel reads it."""
        w = self.weight
        key = contents_key(w)
        if self._weight_t is None or key != self._key:
            self._weight_t, self._key = w.detach().t().contiguous(), key
        return self._weight_t

    def _decoding(self, x2: torch.Tensor) -> bool:
        """``x2`` is a step the GEMV kernels take (Triton's and the CPU's): 1 to ``MAX_BATCH`` rows, no gradient
        to compute, x, W and b of one dtype."""
        return (
            not grad_needed(x2, self.weight, self.bias)
            and 1 <= x2.shape[0] <= MAX_BATCH
            and x2.dtype == self.weight.dtype
            and (self.bias is None or self.bias.dtype == x2.dtype)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from kernels.sparse_gemv import cpu  # the C kernel's module (it imports this one)

        x2 = x.reshape(-1, self.in_features)
        if self._decoding(x2):
            if x2.dtype in DTYPES and use_triton(x2):
                from kernels.sparse_gemv.kernel import Workspace, sparse_gemv  # imports Triton: only where it runs

                weight_t = self.weight_t()
                if self._workspace is None or self._workspace.sums.device != weight_t.device:
                    self._workspace = Workspace.zeros(weight_t.device, self.out_features)
                y = sparse_gemv(x2, weight_t, self.bias, self.threshold, self.sparsity, self._workspace)
                return y.reshape(*x.shape[:-1], self.out_features)
            if cpu.runs_on(x2):
                y, self.kept = cpu.cpu_sparse_gemv(x2, self.weight_t(), self.bias, self.threshold)
                return y.reshape(*x.shape[:-1], self.out_features)
        if x2.device.type == "cpu":
            clib.warn_unavailable(logger, "sparse_gemv", "dense PyTorch math", cpu.unavailable())
        return sparse_linear(x, self.weight, self.bias, self.threshold)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, threshold={self.threshold:.4g}, "
            f"sparsity={self.sparsity:g}"
        )
