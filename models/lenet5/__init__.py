"""LeNet-5 on 32x32 images (kept torch-free: the model registry imports it to plan a matrix).

``budget``: its optimizer steps, counted like every image model's (:func:`lib.budget.image_budget`).
"""

from lib.budget import image_budget as budget

__all__ = ["budget"]
