"""Tasks: what the shared loop needs to know about data and loss, and nothing about the model.

A task yields training batches in a deterministic order (a function of seed and epoch only, so a resumed run
sees the same batches), computes the loss of a batch, and evaluates a model. ``metric``/``metric_mode``
name the evaluation metric that decides the best checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F


class ImageClassification:
    """Image classification on tensors held on the training device (no DataLoader workers needed).

    Images stay ``uint8`` on the device and are normalised per batch with the dataset's mean/std.
    """

    metric = "accuracy"
    metric_mode = "max"
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

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.float() - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    def batches(self, seed: int, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``start, start+1, ...`` of epoch ``epoch``; the order depends on (seed, epoch) only."""
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(self.num_train, generator=gen).to(self.device)
        for i in range(start, self.steps_per_epoch):
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
