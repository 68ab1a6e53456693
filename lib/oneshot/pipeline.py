"""The one-shot pipeline: calibration windows, block-by-block pruning, perplexity before and after, files.

:func:`prune_model` runs the blocks in order. For each block it gathers the :class:`~lib.oneshot.LayerStats` of
every Linear from the block's inputs (forward pre-hooks on the Linears during one pass of the block over the
calibration batches; the Hessian only when ``method.NEEDS_HESSIAN``), prunes each Linear with the method and
copies the returned weight in, then runs the pruned block again: its outputs are the next block's inputs. So every
block is calibrated on the outputs of the already-pruned blocks before it (SparseGPT's and Wanda's sequential
setting; within a block all Linears see the block's unpruned sublayers, as in their reference code).

Files, when ``out_dir`` is given, one per Linear, in the published analysis's naming
``layer{N}-{component}-{indices}-{sparsity}.pt`` (e.g. ``layer0-mlp.down_proj-0-0-0.5.pt``) holding
``{"weight": pruned weight, "mask": bool mask}``: N the block index, component the Linear's module path in the
block (:func:`lib.oneshot.models.components`: ``self_attn.q_proj``, ``fc1``, ``mlp.c_fc`` ...), indices the
(row, column) block of the weight the file holds (:data:`WHOLE`: ours hold the whole weight; the published files'
``0-0``), sparsity the target (with an N:M pattern, the pattern's ``1 - N/M``; the pattern itself is in the
directory's name and ``prune.json``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from lib.errors import UserError
from lib.oneshot import LayerStats, OneShotMethod
from lib.oneshot.models import CausalLM

logger = logging.getLogger(__name__)


WHOLE = "0-0"  # a mask file's indices field: the (row, column) block of the weight it holds; ours: the whole


def target_name(sparsity: float, pattern: tuple[int, int] | None) -> str:
    """``0.5``; with an N:M pattern its sparsity and the pattern, ``0.5-2of4``."""
    if pattern is not None:
        n, m = pattern
        return f"{1 - n / m:g}-{n}of{m}"
    return f"{sparsity:g}"


def windows(tokens, count: int, length: int, seed: int | None) -> torch.Tensor:
    """(count, length) int64 windows of a token array: at seeded random starts (calibration, as the papers draw
    theirs), or with ``seed=None`` the first ``count`` consecutive ones (validation; fewer when the text is short,
    never none)."""
    n = len(tokens)
    if n < length + 1:
        raise UserError(
            f"the text has {n} tokens, fewer than one window of {length} + 1: use a shorter SEQLEN or more text"
        )
    if seed is None:
        starts = [i * length for i in range(min(count, n // length))]
    else:
        starts = torch.randint(0, n - length + 1, (count,), generator=torch.Generator().manual_seed(seed)).tolist()
    return torch.from_numpy(np.stack([np.asarray(tokens[s : s + length], dtype=np.int64) for s in starts]))


@torch.no_grad()
def perplexity(lm: CausalLM, ids: torch.Tensor, batch_size: int = 8) -> float:
    """exp of the mean next-token loss over the windows ``ids`` (V, T): T - 1 predictions each."""
    total, count = 0.0, 0
    for batch in ids.split(batch_size):
        batch = batch.to(lm.device)
        logits = lm.logits(batch)[:, :-1].float()  # (B, T-1, vocab)
        total += F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum").item()
        count += batch[:, 1:].numel()
    return math.exp(min(total / count, 700.0))


@dataclass
class LayerRecord:
    block: int
    component: str
    shape: list[int]
    sparsity: float  # achieved: the fraction of the weight that is exactly zero
    seconds: float  # statistics are gathered per block; this is the prune and copy of this Linear
    file: str | None = None


@dataclass
class PruneResult:
    layers: list[LayerRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def sparsity(self) -> float:
        """Of all pruned Linears together."""
        sizes = [math.prod(r.shape) for r in self.layers]
        return sum(r.sparsity * s for r, s in zip(self.layers, sizes, strict=True)) / max(sum(sizes), 1)

    def to_json(self) -> dict:
        return {"sparsity": self.sparsity, "seconds": self.seconds, "layers": [asdict(r) for r in self.layers]}


@torch.no_grad()
def prune_model(
    lm: CausalLM,
    method: OneShotMethod,
    sparsity: float,
    pattern: tuple[int, int] | None,
    calibration: torch.Tensor,
    out_dir: Path | None = None,
    batch_size: int = 8,
) -> PruneResult:
    """Prune every Linear of ``lm``'s blocks in place, block by block, calibrated on token ids ``calibration``
    (N, T) (see the module docstring); write the per-layer files into ``out_dir`` when given."""
    start = time.perf_counter()
    result = PruneResult()
    device = lm.device
    inputs = [lm.embed(batch.to(device)) for batch in calibration.split(batch_size)]  # [(hidden, context)]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    blocks = lm.blocks()
    for index, block in enumerate(blocks):
        linears = lm.linears(block)
        stats = {
            name: LayerStats(lin.in_features, device, hessian=method.NEEDS_HESSIAN) for name, lin in linears.items()
        }
        hooks = [
            lin.register_forward_pre_hook(lambda module, args, s=stats[name]: s.add(args[0]))
            for name, lin in linears.items()
        ]
        try:
            for hidden, context in inputs:
                lm.run_block(block, hidden, context)
        finally:
            for hook in hooks:
                hook.remove()
        for name, lin in linears.items():
            began = time.perf_counter()
            weight, mask = method.prune(lin.weight.detach().float(), stats[name], sparsity, pattern)
            lin.weight.copy_(weight.to(lin.weight.dtype))
            record = LayerRecord(
                index,
                name,
                list(lin.weight.shape),
                (lin.weight == 0).float().mean().item(),
                time.perf_counter() - began,
            )
            if out_dir is not None:
                target = sparsity if pattern is None else 1 - pattern[0] / pattern[1]
                record.file = f"layer{index}-{name}-{WHOLE}-{target:g}.pt"
                torch.save({"weight": lin.weight.detach().cpu(), "mask": mask.cpu()}, out_dir / record.file)
            result.layers.append(record)
        del stats
        inputs = [(lm.run_block(block, hidden, context), context) for hidden, context in inputs]
        logger.info("block %d/%d pruned (%s)", index + 1, len(blocks), ", ".join(linears))
    result.seconds = time.perf_counter() - start
    return result
