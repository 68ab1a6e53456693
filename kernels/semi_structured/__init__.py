"""2:4 semi-structured Linears: N:M-pruned (2:4) weights multiplied on NVIDIA's sparse tensor cores, for inference.

A GPU of compute capability >= 8.0 (Ampere and later) multiplies by a weight that keeps at most 2 of every 4
consecutive inputs of each output row while reading only the kept values and 2-bit indices (Mishra et al. 2021,
"Accelerating Sparse Deep Neural Networks", arXiv:2104.08378); torch exposes it as
``torch.sparse.to_sparse_semi_structured`` (cuSPARSELt, or CUTLASS). Once sampling has loaded a run's weights
with the masks multiplied in, every ``nn.Linear`` whose weight holds that pattern
(:func:`lib.pruning.patterns.is_2_4`; ``PRUNING_NM`` with the 2:4 pattern produces it) is converted by
:func:`lib.pruning.patterns.to_semi_structured` and swapped for a :class:`SemiStructuredLinear`.

Precision: the sparse kernels take fp16 or bf16 only. The converted layers compute in bf16 for a run trained
under ``PRECISION=bf16`` and in fp16 otherwise; each casts its input to that dtype and its output back, so the
rest of the model keeps its dtype (the per-op casts autocast would make; no whole-model cast).

Where it cannot run (no CUDA, a GPU below compute capability 8.0, weights off the GPU, shapes torch refuses)
one warning line says why and what to do, and those layers stay dense: the model's outputs are then exactly
those without the kernel. Inference only: the compressed weight is frozen (no gradients), so training never
uses it. Dense math is the reference; there is no other path to keep in step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from kernels import KERNELS, Kernel
from lib.pruning.patterns import NotSemiStructured, is_2_4, semi_structured_unsupported, to_semi_structured

logger = logging.getLogger(__name__)


class SemiStructuredLinear(nn.Module):
    """A Linear converted by :func:`to_semi_structured`: its 2:4 compressed, frozen ``weight`` and its ``bias``
    (same names; the bias in the weight's dtype). The input is cast to the weight's dtype and the output back to
    the input's, so an fp32 model runs with fp16 or bf16 2:4 layers inside it."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous: torch's semi-structured linear views the input as (tokens, in)
        y = nn.functional.linear(x.to(self.weight.dtype).contiguous(), self.weight, self.bias)  # (..., out)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, dtype={self.weight.dtype}, 2:4"


@KERNELS.register("semi_structured")
class SemiStructuredKernel(Kernel):
    """Swaps every ``nn.Linear`` whose weight holds a 2:4 pattern for a :class:`SemiStructuredLinear`."""

    PURPOSES = ("inference",)

    @dataclass(frozen=True)
    class Settings:
        dtype: torch.dtype = torch.float16  # what the 2:4 layers compute in: bf16 for PRECISION=bf16 runs

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or self.Settings()

    @classmethod
    def from_config(cls, cfg) -> SemiStructuredKernel:
        # A run trained under bf16 autocast saw bf16's activation range; fp16 has more mantissa but less range.
        return cls(cls.Settings(dtype=torch.bfloat16 if cfg.get("PRECISION") == "bf16" else torch.float16))

    def apply(self, model: nn.Module, purpose: str, device: torch.device) -> list[str]:
        linears = [(n, m) for n, m in model.named_modules() if type(m) is nn.Linear and is_2_4(m.weight)]
        if not linears:
            logger.info("semi_structured kernel: no Linear holds a 2:4 pattern; model left dense")
            return []
        unsupported = semi_structured_unsupported(device)
        if unsupported:
            logger.warning(
                "%s; %d Linears with a 2:4 pattern left dense (same outputs, no speedup): run on an Ampere or newer "
                "GPU to use them, or set KERNELS_SEMI_STRUCTURED=n",
                unsupported,
                len(linears),
            )
            return []
        taken, refused = [], {}
        for name, linear in linears:
            try:
                to_semi_structured(linear, self.settings.dtype)
            except NotSemiStructured as err:
                refused.setdefault(str(err), []).append(name)
                continue
            model.set_submodule(name, SemiStructuredLinear(linear))
            taken.append(name)
        if refused:
            logger.warning(
                "semi_structured kernel: %d of %d Linears with a 2:4 pattern left dense: %s",
                sum(map(len, refused.values())),
                len(linears),
                "; ".join(f"{', '.join(names)}: {why}" for why, names in refused.items()),
            )
        return taken
