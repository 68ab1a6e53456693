"""LeNet-5 entrypoint: builds the model, its dataset and loss from the run's config and hands them to the
shared training loop. Started by the runner as ``python -m models.lenet5.train --run-dir DIR``."""

from __future__ import annotations

from torch import nn

from lib.data import load_dataset
from lib.tasks import ImageClassification
from lib.training import RunContext, run_training
from models.lenet5.model import LeNet5, LeNet5Config


def build(ctx: RunContext) -> tuple[nn.Module, ImageClassification]:
    cfg = ctx.cfg
    data = load_dataset(cfg["IMAGE_DATASET"], ctx.data_dir)
    model = LeNet5(
        LeNet5Config(
            in_channels=data.train_x.shape[1],
            num_classes=data.num_classes,
            activation=cfg["LENET5_ACTIVATION"],
            pool=cfg["LENET5_POOL"],
        )
    )
    return model, ImageClassification(data, ctx.device, cfg["BATCH_SIZE"], label_smoothing=cfg["LABEL_SMOOTHING"])


if __name__ == "__main__":
    run_training(build, __doc__)
