"""Registries: every family (models, optimizers, pruning methods, datasets, corpora, tokenizers, schedules,
trackers) is a mapping from the lower-case suffix of its Kconfig symbol to the thing that implements it.

``OPTIMIZER_ADAMW`` -> ``OPTIMIZERS["adamw"]``; ``LR_SCHEDULE_COSINE`` -> ``LR_SCHEDULES["cosine"]``;
``IMAGE_DATASET_CIFAR10`` -> ``DATASETS["cifar10"]``.
Adding a method is one new file that registers itself, one Kconfig entry, and tests; no entrypoint
branches on names.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from lib.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> implementation, keyed by the lower-case suffix of ``<prefix>_<NAME>`` Kconfig symbols."""

    def __init__(self, family: str, prefix: str, menu_order: bool = False) -> None:
        self.family = family
        self.prefix = prefix
        # With menu_order the names come in the order Kconfig defines their symbols (a family whose members
        # register themselves as their modules are found: the menu, not the import order, fixes the matrix's).
        self.menu_order = menu_order
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator (or call) that adds ``obj`` under ``name``, the lower-case suffix of its Kconfig symbol."""
        if not re.fullmatch(r"[a-z0-9_]+", name):
            raise ValueError(
                f"{self.family} name {name!r} must be lower-case letters, digits and '_' "
                f"(the suffix of its Kconfig symbol {self.prefix}_{name.upper()})"
            )

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.family} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return add

    def symbol(self, name: str) -> str:
        return f"{self.prefix}_{name.upper()}"

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UserError(
                f"unknown {self.family} {name!r}: allowed values are {', '.join(sorted(self._items))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        if not self.menu_order:
            return list(self._items)
        order = _menu_order()
        return sorted(self._items, key=lambda n: order.get(self.symbol(n), len(order)))

    def selected(self, cfg: Any) -> list[str]:
        """Names whose bool symbol is set in ``cfg``, in :meth:`names` order (a multi-select axis)."""
        return [n for n in self.names() if cfg[self.symbol(n)]]


@functools.cache
def _menu_order() -> dict[str, int]:
    """Kconfig symbol -> its position in the tree (parsed once per process, only when asked)."""
    from lib.config import load_kconfig

    return {sym.name: i for i, sym in enumerate(load_kconfig().unique_defined_syms)}


def import_members(package: str, path: Iterable[str]) -> None:
    """Import every module of ``package`` (``path`` is its ``__path__``): for a family whose members register
    themselves, so adding one is adding its module, with no list of members to keep."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")
