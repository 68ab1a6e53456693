"""Pruning methods: ``PRUNING_<NAME>`` in Kconfig -> ``PRUNERS["<name>"]``, a :class:`Pruner` subclass.

A method is one module in this package whose class registers itself (``@PRUNERS.register("name")``); every
module here is imported when the package is, so adding a method touches its own file, its Kconfig entry and
its tests, nothing else. The registry lists the methods in the order the Kconfig menu defines them.
"""

from __future__ import annotations

from lib.pruning.base import PRUNERS, Pruner
from lib.registry import import_members

import_members(__name__, __path__)

__all__ = ["PRUNERS", "Pruner"]
