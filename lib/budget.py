"""A run's training budget counted from its config alone: optimizer steps and, for a model that trains on
tokens, the tokens it sees. ``make plan`` and ``make estimate`` count it without loading any data.

Each model package declares how it counts, as ``budget(cfg, scale) -> Budget`` in its torch-free
``__init__.py`` (``scale`` is the pruning method's factor on the training length, AdamWPrune's bitter2). An
image model uses :func:`image_budget`; GPT-2 counts its iterations and windows. The counts are the ones the
task's ``periods`` give the trainer (:mod:`lib.tasks`); ``tests/lib/test_status.py`` holds them to that.
This module imports nothing heavy: the model packages import it while the model registry loads them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Budget:
    steps: int  # optimizer steps
    tokens: int | None = None  # tokens trained on (language models), None for the others


def image_budget(cfg: Any, scale: float = 1.0) -> Budget:
    """``ceil(EPOCHS x scale)`` epochs of ``ceil(train images / BATCH_SIZE)`` steps, the training-set size as
    ``IMAGE_DATASET``'s module declares it."""
    from lib.data.registry import TRAIN_SIZES  # with torch: only when counted, not when a model package loads

    per_epoch = math.ceil(TRAIN_SIZES[cfg["IMAGE_DATASET"]] / cfg["BATCH_SIZE"])
    return Budget(math.ceil(cfg["EPOCHS"] * scale) * per_epoch)
