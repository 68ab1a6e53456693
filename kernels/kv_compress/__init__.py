"""KV compression for sampling (``KERNELS_KV_COMPRESS``): the values (and with ``KV_COMPRESS_KEYS`` the keys) of
every attention layer are stored in the KV cache as ``KV_COMPRESS_RANK`` PCA coordinates per head, of the
vectors themselves or of their monotone-spline warp (``KV_COMPRESS_METHOD``; :mod:`kernels.kv_compress.reference`),
fitted on a few windows of the run's validation text when the model is
loaded, and read back as their reconstruction wherever attention uses them: in the cache of ``GPT2.generate``,
and in a full forward pass (prefill, the perplexity ``make sample`` reports with and without). It approximates
the model; the cache's bytes shrink by rank / head dimension for each compressed projection
(:func:`cache_bytes` measures them on real caches).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from kernels import KERNELS, Kernel
from kernels.kv_compress.reference import METHODS, Basis, SplineBasis, relative_error

logger = logging.getLogger(__name__)


def attention_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The modules that attend with a KV cache (those with ``_attend`` and ``c_attn``: GPT-2's), by name."""
    return {n: m for n, m in model.named_modules() if hasattr(m, "_attend") and hasattr(m, "c_attn")}


@torch.no_grad()
def head_projections(model: nn.Module, inputs: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each attention layer's keys and values (nh, N, d) on ``inputs`` (B, T token ids), from its QKV projection
    (before any value gate)."""
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for name, attn in attention_layers(model).items():

        def hook(module, args, out, name=name, nh=attn.n_head) -> None:
            b, t, three_c = out.shape
            c = three_c // 3
            _, k, v = out.split(c, dim=2)
            heads = [z.reshape(b * t, nh, c // nh).transpose(0, 1) for z in (k, v)]  # (nh, N, d)
            captured[name] = (heads[0].float(), heads[1].float())

        handles.append(attn.c_attn.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return captured


def cache_bytes(model: nn.Module, ids: torch.Tensor) -> int:
    """The bytes of the KV cache after prefilling ``ids`` (B, T): every tensor it holds, measured."""
    cache = model.new_cache()
    with torch.no_grad():
        model(ids, cache)
    return sum(t.numel() * t.element_size() for layer in cache for t in layer.values())


@KERNELS.register("kv_compress")
class KVCompressKernel(Kernel):
    """Installs the fitted bases on every attention layer (``module.kv_basis``)."""

    PURPOSES = ("inference",)
    CALIBRATES = True

    @dataclass(frozen=True)
    class Settings:
        rank: int = 16  # KV_COMPRESS_RANK: PCA coordinates kept per head
        keys: bool = False  # KV_COMPRESS_KEYS: compress the keys too
        method: str = "pca"  # KV_COMPRESS_METHOD: a key of reference.METHODS
        knots: int = 16  # KV_COMPRESS_SPLINE_KNOTS: segments of each dimension's spline (spline_pca)

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or self.Settings()
        self.fitter = METHODS[self.settings.method]  # an unknown method: one error line, before calibrating
        self.bases: dict[str, dict[str, Basis | SplineBasis]] | None = None
        self.errors: dict[str, dict[str, float]] = {}

    @property
    def rank(self) -> int:
        return self.settings.rank

    @classmethod
    def from_config(cls, cfg) -> KVCompressKernel:
        # .get: runs recorded before the method existed were fitted by PCA
        method = cfg.get("KV_COMPRESS_METHOD") or "pca"
        knots = cfg.get("KV_COMPRESS_SPLINE_KNOTS") or cls.Settings.knots
        return cls(cls.Settings(cfg["KV_COMPRESS_RANK"], bool(cfg["KV_COMPRESS_KEYS"]), method, knots))

    def calibrate(self, model: nn.Module, inputs) -> None:
        self.bases, self.errors = {}, {}
        for name, (k, v) in head_projections(model, inputs).items():
            rank = min(self.settings.rank, v.shape[-1])
            which = {"v": v, **({"k": k} if self.settings.keys else {})}
            self.bases[name] = {kind: self.fitter(x, rank, self.settings.knots) for kind, x in which.items()}
            self.errors[name] = {kind: relative_error(x[None], self.bases[name][kind]) for kind, x in which.items()}
        worst = max((e for layer in self.errors.values() for e in layer.values()), default=0.0)
        logger.info(
            "kv_compress: %s, rank %d, round-trip error on the calibration windows up to %.3g",
            self.settings.method,
            self.rank,
            worst,
        )

    def apply(self, model: nn.Module, purpose: str, device: torch.device) -> list[str]:
        if self.bases is None:
            raise RuntimeError("kv_compress: calibrate(model, inputs) before apply (kernels.prepare does)")
        layers = attention_layers(model)
        for name, bases in self.bases.items():
            layers[name].kv_basis = {kind: b.to(device) for kind, b in bases.items()}
        return sorted(self.bases)
