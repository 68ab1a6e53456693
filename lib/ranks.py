"""Data-parallel training (DDP) in one place: which process this is, and what the processes agree on.

Under ``torchrun`` every process trains on its share of each step's micro-batches, gradients are averaged
during backward, and only rank 0 writes anything. The loop asks :class:`Ranks` for the rest: the mean of a
value over the processes (the logged loss), whether any process saw something (a non-finite loss, a stop
signal), and a barrier. With one process every one of these is the value itself, with no collective.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from lib.errors import UserError


def join_process_group(device: torch.device) -> tuple[int, int]:
    """(rank, world size): torchrun's environment, with the process group joined (NCCL on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world


@dataclass(frozen=True)
class Ranks:
    """This process's rank among ``world`` training processes. The methods that say "collective" must be
    called by every rank at the same point."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0: the process that evaluates, logs and writes the run directory."""
        return self.rank == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` as the training step calls it: under DDP wrapped so gradients are averaged in backward."""
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def share(self, micro_batches: list) -> list:
        """This rank's micro-batches of a step's global batch."""
        if self.world == 1:
            return micro_batches
        if len(micro_batches) % self.world:
            raise UserError(
                f"DDP_PROCS={self.world} needs a multiple of {self.world} micro-batches per step, this task has "
                f"{len(micro_batches)}; raise GPT2_GRAD_ACCUM or lower DDP_PROCS"
            )
        return micro_batches[self.rank :: self.world]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` averaged over the processes (collective)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        total = value.clone()
        dist.all_reduce(total)
        return total / self.world

    def any(self, flag: bool | torch.Tensor) -> bool:
        """Whether ``flag`` holds on any process (collective)."""
        if self.world == 1:
            return bool(flag)
        import torch.distributed as dist

        total = torch.as_tensor(flag, device=self.device).to(torch.int32)
        dist.all_reduce(total, op=dist.ReduceOp.MAX)
        return bool(total)

    def own_part(self, mean: float) -> float:
        """This rank's part of a sum saved as its mean over the processes: rank 0 carries all of it, so the
        next :meth:`mean` gives the same value back."""
        if not self.main:
            return 0.0
        return mean * self.world if self.world > 1 else mean

    def barrier(self) -> None:
        """Wait for every process (collective; nothing to wait for with one)."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def finish(self) -> None:
        """Leave the process group once every rank is done."""
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
