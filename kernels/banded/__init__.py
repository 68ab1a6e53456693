"""Block-banded MLP layers: the Linears a banded pruner masked, computed over their band's tiles only.

A layer is taken over when its ``weight_mask`` is exactly ``banded_mask(out, in, w)`` for some band width
``w > 0`` (derived from the mask: the largest kept offset ``|j - i·r|`` on the wide side); other masks are
logged and left dense. Where it runs:

- on the CPU, ``BANDED_KERNEL_CPU``: :mod:`kernels.banded.cpu` (C, compiled on first use, register-blocked
  loops over 8-row tiles; float32 and float64), or :mod:`kernels.banded.reference` (pure PyTorch, batched GEMMs
  over tiles of ``BANDED_KERNEL_BLOCK`` wide-side channels), forward and backward; the reference also takes
  what the C kernel cannot (other dtypes, or a machine where it cannot be built: logged once);
- on a GPU, ``BANDED_KERNEL_GPU``: :mod:`kernels.banded.kernel` (Triton, forward and backward), or
  :mod:`kernels.banded.cuda` (the CUDA forward, built on first use; its backward is the reference's).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import nn

from kernels import KERNELS, Kernel, clib
from kernels.banded import cpu as cpu_kernel
from kernels.banded.reference import BandPlan, banded_linear, plan
from kernels.runtime import contents_key, interpreting, use_triton
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


GPU_PATHS = ("triton", "cuda")  # BANDED_KERNEL_GPU
CPU_PATHS = ("c", "torch")  # BANDED_KERNEL_CPU


def auto_block(width: int) -> int:
    """The CPU path's tile extent for a band ``width`` wide-side channels wide: the power of two nearest
    ``width / 4`` within 16..128 (tiles a quarter of the band: their overhang costs about a quarter more FLOPs,
    and they stay large enough for fast GEMMs; measured with make bench-kernels, docs/kernels.md)."""
    return min(128, max(16, 2 ** round(math.log2(max(width, 1) / 4))))


class BandedLinear(nn.Module):
    """A masked ``nn.Linear`` computed over its band's tiles. Takes over the Linear's ``weight``, ``bias`` and
    ``weight_mask`` (the same tensors under the same names), so the optimizer, the pruner and checkpoints see
    no difference. What each path needs from the mask (the reference's tile plan, the GPU kernels' row ranges)
    is rebuilt when the mask changes in place or moves to another device."""

    def __init__(self, linear: nn.Linear, block: int, gpu: str = "triton", cpu: str = "c") -> None:
        super().__init__()
        if gpu not in GPU_PATHS:
            raise ValueError(f"banded GPU path {gpu!r}: one of {', '.join(GPU_PATHS)}")
        if cpu not in CPU_PATHS:
            raise ValueError(f"banded CPU path {cpu!r}: one of {', '.join(CPU_PATHS)}")
        self.in_features, self.out_features, self.block = linear.in_features, linear.out_features, block
        self.gpu, self.cpu = gpu, cpu
        self.weight, self.bias = linear.weight, linear.bias
        for name, buffer in linear.named_buffers(recurse=False):  # the pruner's weight_mask
            self.register_buffer(name, buffer)
        self._cache: dict[str, tuple[tuple, object]] = {}

    def _cached(self, what: str, build):
        mask = self.weight_mask
        key = contents_key(mask)
        if what not in self._cache or self._cache[what][0] != key:
            self._cache[what] = key, build(mask)
        return self._cache[what][1]

    def plan(self) -> BandPlan:
        return self._cached("plan", lambda mask: plan(mask, self.block).to(mask.device))

    def cpu_plan(self) -> cpu_kernel.CpuPlan:
        return self._cached("cpu_plan", cpu_kernel.plan)

    def ranges(self):
        from kernels.banded.kernel import band_ranges  # Triton is imported on first use only

        return self._cached("ranges", band_ranges)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The C kernel's case first: a decoding step of GPT-2 tiny's whole layer costs about 10 us there, and each
        # test or parameter look-up (nn.Module.__getattr__) here 0.1-1 us
        weight, bias = self.weight, self.bias
        if self.cpu == "c" and cpu_kernel.runs_on(x, weight, bias) and not interpreting():
            return cpu_kernel.banded_linear_unchecked(x, weight, bias, self.cpu_plan())
        if x.is_cuda and self.gpu == "cuda":
            from kernels.banded.cuda import cuda_banded_linear

            return cuda_banded_linear(x, weight, bias, self.ranges(), self.plan())
        if use_triton(x):
            from kernels.banded.kernel import triton_banded_linear

            return triton_banded_linear(x, weight, bias, self.ranges())
        if self.cpu == "c" and x.device.type == "cpu":
            clib.warn_unavailable(logger, "banded kernel", "the PyTorch path", cpu_kernel.unavailable())
        return banded_linear(x, weight, bias, self.plan())

    def extra_repr(self) -> str:
        sizes = f"in_features={self.in_features}, out_features={self.out_features}"
        return f"{sizes}, block={self.block}, gpu={self.gpu}, cpu={self.cpu}"


@KERNELS.register("banded")
class BandedKernel(Kernel):
    """Swaps every MLP Linear with a banded ``weight_mask`` for a :class:`BandedLinear`."""

    PURPOSES = ("train", "inference")

    @dataclass(frozen=True)
    class Settings:
        block: int = 0  # BANDED_KERNEL_BLOCK: tile extent on the wide side, in channels; 0: auto_block per layer
        gpu: str = "triton"  # BANDED_KERNEL_GPU: the path on CUDA tensors
        cpu: str = "c"  # BANDED_KERNEL_CPU: the path on CPU tensors

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or self.Settings()

    @classmethod
    def from_config(cls, cfg) -> BandedKernel:
        return cls(
            cls.Settings(block=cfg["BANDED_KERNEL_BLOCK"], gpu=cfg["BANDED_KERNEL_GPU"], cpu=cfg["BANDED_KERNEL_CPU"])
        )

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
            block = self.settings.block or auto_block(width)
            model.set_submodule(name, BandedLinear(module, block, self.settings.gpu, self.settings.cpu))
            taken.append(name)
            logger.info("banded kernel: %s (%dx%d, band width %d)", name, *mask.shape, width)
        return taken
