"""Image datasets, by name: ``load_dataset("mnist", data_dir) -> ImageDataset``.

Every dataset is delivered in memory as uint8 (N, C, 32, 32) tensors with int64 labels and the per-channel
mean/std of its training images. Registered: ``digits`` (bundled with scikit-learn, the default), ``mnist``,
``fashion_mnist``, ``cifar10``, ``cifar100`` (the members of the ``IMAGE_DATASET`` choice in ``Kconfig`` here). A
new dataset is one module here that decorates its loader with ``@DATASETS.register("name")``, plus its import
below and its ``IMAGE_DATASET_NAME`` entry in ``Kconfig``.
"""

from lib.data import cifar, digits, mnist  # noqa: F401  (imported for their @DATASETS.register side effect)
from lib.data.registry import DATASETS, ImageDataset, load_dataset

__all__ = ["DATASETS", "ImageDataset", "load_dataset"]
