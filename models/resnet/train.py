"""ResNet entrypoint (resnet18, resnet50): builds the model, its dataset (one-channel sets replicated to 3
channels), batched on-device augmentation and the loss, and hands them to the shared training loop. Started by
the runner as ``python -m models.resnet.train --run-dir DIR``."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from lib.data import load_dataset
from lib.data.augment import crop_flip, cutout, with_channels
from lib.tasks import ImageClassification
from lib.training import RunContext, run_training
from models.resnet.model import ResNet, ResNetConfig

DEPTHS = {"resnet18": 18, "resnet50": 50}


def _augment(x: torch.Tensor, cutout_size: int) -> torch.Tensor:
    return cutout(crop_flip(x), cutout_size)


def build(ctx: RunContext) -> tuple[nn.Module, ImageClassification]:
    cfg = ctx.cfg
    data = load_dataset(cfg["IMAGE_DATASET"], ctx.data_dir)
    if data.train_x.shape[1] != 3:
        data = type(data).from_splits(
            data.name,
            with_channels(data.train_x, 3),
            data.train_y,
            with_channels(data.test_x, 3),
            data.test_y,
            data.num_classes,
        )
    model = ResNet(ResNetConfig(depth=DEPTHS[ctx.spec.axes["model"]], in_channels=3, num_classes=data.num_classes))
    augment = partial(_augment, cutout_size=cfg["RESNET_CUTOUT"]) if cfg["RESNET_AUGMENT"] else None
    task = ImageClassification(
        data, ctx.device, cfg["BATCH_SIZE"], augment=augment, label_smoothing=cfg["LABEL_SMOOTHING"]
    )
    return model, task


if __name__ == "__main__":
    run_training(build, __doc__)
