"""ResNet for 32x32 images; one package, two values of the model axis (kept torch-free: the model registry
reads MODEL_NAMES without importing torch). ``budget``: its optimizer steps, counted like every image model's
(:func:`lib.budget.image_budget`)."""

from lib.budget import image_budget as budget

MODEL_NAMES = ("resnet18", "resnet50")

__all__ = ["MODEL_NAMES", "budget"]
