"""Model registry: ``MODEL_<NAME>`` in Kconfig -> ``MODELS["<name>"]``, the entrypoint module
``models.<package>.train`` that the runner starts as ``python -m models.<package>.train --run-dir DIR``.

A model is a directory ``models/<package>/`` with ``model.py``, ``train.py`` and ``Kconfig``; its
``__init__.py`` may list several axis values in ``MODEL_NAMES`` (ResNet: resnet18, resnet50), otherwise the
directory name is the one value, and may declare the matrix ``AXES`` and ``RULES`` the model adds (GPT-2's
attention gates). The packages are found by walking ``models/`` and imported by name, without torch (their
``__init__`` must stay torch-free), so ``lib/`` has no import of a model and planning a matrix stays fast.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from lib.config import ROOT
from lib.registry import Registry

MODELS: Registry[str] = Registry("model", "MODEL")
MODEL_PACKAGES: dict[str, ModuleType] = {}  # model name -> its package (for the AXES and RULES it declares)

for _entry in sorted((ROOT / "models").iterdir()):
    if (_entry / "train.py").is_file():
        _package = importlib.import_module(f"models.{_entry.name}")
        for _name in getattr(_package, "MODEL_NAMES", (_entry.name,)):
            MODELS.register(_name)(f"models.{_entry.name}.train")
            MODEL_PACKAGES[_name] = _package
