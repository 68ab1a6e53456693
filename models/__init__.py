"""The models: one package per model (``models/<name>/``: ``model.py``, ``train.py``, ``Kconfig``), found and
registered by :mod:`lib.model_registry`."""
