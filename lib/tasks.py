"""Tasks: what the shared loop needs to know about data and loss, and nothing about the model.

A task splits training into evaluation periods (``periods``: steps per period; an epoch for images),
yields each period's step batches in a deterministic order (a function of seed and period only, so a resumed
run sees the same batches), splits a step batch into micro-batches for gradient accumulation, computes the
loss of a micro-batch, and evaluates a model. ``metric``/``metric_mode`` name the evaluation metric that
decides the best checkpoint; ``progress`` adds the task's own x-axis to metric rows (epoch, tokens);
``units``/``unit`` count what throughput is measured in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lib.errors import UserError


class ImageClassification:
    """Image classification on tensors held on the training device (no DataLoader workers needed).

    Images stay ``uint8`` on the device and are normalised per batch with the dataset's mean/std.
    """

    metric = "accuracy"
    metric_mode = "max"
    unit = "images"
    memory_format = torch.contiguous_format  # the shared loop sets torch.channels_last (CHANNELS_LAST=y)

    def __init__(
        self, data, device: torch.device, batch_size: int, augment: Callable | None = None, label_smoothing: float = 0.0
    ) -> None:
        self.data = data
        self.device = device
        self.batch_size = batch_size
        self.augment = augment  # uint8 (B, C, H, W) -> uint8 (B, C, H, W), on the device, training batches only
        self.label_smoothing = label_smoothing
        self.train_x = data.train_x.to(device)
        self.train_y = data.train_y.to(device)
        self.test_x = data.test_x.to(device)
        self.test_y = data.test_y.to(device)
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(data.mean, device=device).view(shape) * 255
        self.std = torch.tensor(data.std, device=device).view(shape) * 255

    @property
    def num_train(self) -> int:
        return self.train_x.shape[0]

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_train / self.batch_size)

    def periods(self, cfg, scale: float = 1.0) -> list[int]:
        """One period per epoch: EPOCHS (times the pruning method's budget scale) of ``steps_per_epoch``."""
        return [self.steps_per_epoch] * math.ceil(cfg["EPOCHS"] * scale)

    def progress(self, step: int) -> dict[str, float]:
        return {"epoch": step / self.steps_per_epoch}

    def micro_batches(self, batch):
        return [batch]

    def units(self, batch) -> int:
        return batch[0].shape[0]

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    def batches(
        self, seed: int, epoch: int, start: int = 0, steps: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start, start+1, ...`` of epoch ``epoch``; the order depends on (seed, epoch) only."""
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(self.num_train, generator=gen).to(self.device)
        for i in range(start, steps or self.steps_per_epoch):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.train_x[idx]
            if self.augment is not None:
                x = self.augment(x)
            yield self._normalise(x), self.train_y[idx]

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x).float(), y, label_smoothing=self.label_smoothing)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        for i in range(0, self.test_x.shape[0], self.batch_size):
            x = self._normalise(self.test_x[i : i + self.batch_size])
            y = self.test_y[i : i + self.batch_size]
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
        model.train(was_training)
        n = self.test_x.shape[0]
        return {"loss": loss_sum.item() / n, "accuracy": correct.item() / n}


class ConcatTokens:
    """Several token arrays (shards) read as one: ``len`` and slicing across shard boundaries."""

    def __init__(self, parts) -> None:
        self.parts = [p for p in parts if len(p)]
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, s: slice) -> np.ndarray:
        start, stop, _ = s.indices(len(self))
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        out = []
        while start < stop:
            local = start - self.starts[i]
            piece = self.parts[i][local : local + (stop - start)]
            out.append(np.asarray(piece))
            start += len(piece)
            i += 1
        return np.concatenate(out) if len(out) > 1 else out[0]


class LanguageModeling:
    """Next-token prediction on token arrays (a NumPy array or a shard's memory map; only the windows a batch
    needs are read and moved to the device).

    A training step takes ``batch_size x grad_accum`` random windows of ``block_size + 1`` tokens, drawn from
    a generator seeded by (seed, period), so a resumed run draws the same windows; it is split into
    ``grad_accum`` micro-batches of ``batch_size``. Training is ``max_iters`` steps in periods of
    ``eval_interval`` steps. Validation uses the same ``eval_batches x batch_size`` windows every time (evenly
    spaced over the validation tokens), so curves of different runs compare point by point.
    """

    metric = "loss"
    metric_mode = "min"
    unit = "tokens"

    def __init__(
        self,
        train_tokens,
        val_tokens,
        device: torch.device,
        batch_size: int,
        block_size: int,
        grad_accum: int = 1,
        max_iters: int = 1000,
        eval_interval: int = 100,
        eval_batches: int = 20,
    ) -> None:
        for name, tokens in (("training", train_tokens), ("validation", val_tokens)):
            if len(tokens) < block_size + 2:
                raise UserError(
                    f"the {name} split has {len(tokens)} tokens, fewer than block_size + 2 = {block_size + 2}; "
                    "use a smaller context length or more text"
                )
        self.train_tokens, self.val_tokens = train_tokens, val_tokens
        self.device = device
        self.batch_size, self.block_size, self.grad_accum = batch_size, block_size, grad_accum
        self.max_iters, self.eval_interval, self.eval_batches = max_iters, eval_interval, eval_batches
        last = len(val_tokens) - block_size - 1
        self.val_offsets = torch.linspace(0, last, eval_batches * batch_size).long()

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.grad_accum * self.block_size

    def periods(self, cfg, scale: float = 1.0) -> list[int]:
        total = math.ceil(self.max_iters * scale)
        full, rest = divmod(total, self.eval_interval)
        return [self.eval_interval] * full + ([rest] if rest else [])

    def progress(self, step: int) -> dict[str, float]:
        return {"tokens": float(step * self.tokens_per_step)}

    def _windows(self, tokens, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.block_size
        rows = np.stack([np.asarray(tokens[o : o + t + 1], dtype=np.int64) for o in offsets.tolist()])
        data = torch.from_numpy(rows).to(self.device, non_blocking=True)
        return data[:, :-1], data[:, 1:]  # (B, T) inputs, (B, T) next-token targets

    def batches(self, seed: int, period: int, start: int = 0, steps: int | None = None):
        steps = steps or self.eval_interval
        gen = torch.Generator().manual_seed(seed * 1_000_003 + period)
        high = len(self.train_tokens) - self.block_size - 1  # the last start with a full target window
        offsets = torch.randint(0, high + 1, (steps, self.batch_size * self.grad_accum), generator=gen)
        for i in range(start, steps):
            yield self._windows(self.train_tokens, offsets[i])

    def micro_batches(self, batch):
        x, y = batch
        return list(zip(x.split(self.batch_size), y.split(self.batch_size), strict=True))

    def units(self, batch) -> int:
        return batch[0].numel()

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        logits = model(x)
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        total = torch.zeros((), device=self.device, dtype=torch.float64)
        for offsets in self.val_offsets.split(self.batch_size):
            x, y = self._windows(self.val_tokens, offsets)
            total += F.cross_entropy(model(x).float().flatten(0, 1), y.flatten(), reduction="sum").double()
        model.train(was_training)
        loss = total.item() / (len(self.val_offsets) * self.block_size)
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}
