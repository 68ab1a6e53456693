"""Kconfig has no float or list type: floats, lists and names are ``string`` symbols, and each subsystem types its
own in a ``kconfig_types.py`` beside its Kconfig file, with the types below. :func:`string_types` finds those
files by walking the directories of the Kconfig tree's files and merges them; :mod:`lib.config` validates every
value against its type once, at load time.
"""

from __future__ import annotations

import importlib.util
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import kconfiglib

from lib.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
FIX = 'fix it with `make menuconfig` or `make SET="SYM=VALUE"`'


@dataclass(frozen=True)
class Float:
    """A real number in an interval; ``open_lo``/``open_hi`` exclude the ends."""

    lo: float = -math.inf
    hi: float = math.inf
    open_lo: bool = False
    open_hi: bool = False

    def describe(self) -> str:
        if self.hi == math.inf:
            return f"a number {'>' if self.open_lo else '>='} {self.lo:g}"
        lb, rb = "(" if self.open_lo else "[", ")" if self.open_hi else "]"
        return f"a number in {lb}{self.lo:g}, {self.hi:g}{rb}"

    def parse_one(self, name: str, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = (
            math.isfinite(value)
            and (value > self.lo if self.open_lo else value >= self.lo)
            and (value < self.hi if self.open_hi else value <= self.hi)
        )
        if not ok:
            raise UserError(f"{name}={text!r} is not allowed: must be {self.describe()}; {FIX}")
        return value

    def parse(self, name: str, text: str) -> float:
        return self.parse_one(name, text.strip())


@dataclass(frozen=True)
class FloatList(Float):
    """A space-separated list of distinct numbers, each in the interval; non-empty unless ``may_be_empty``."""

    may_be_empty: bool = False

    def describe(self) -> str:
        return "a space-separated list, each " + super().describe()

    def parse(self, name: str, text: str) -> tuple[float, ...]:
        items = text.split()
        if not items and self.may_be_empty:
            return ()
        if not items:
            raise UserError(f"{name} is empty: must be {self.describe()}; {FIX}")
        values = tuple(self.parse_one(name, item) for item in items)
        if len(set(values)) != len(values):
            raise UserError(f"{name}={text!r} repeats a value: list each value once; {FIX}")
        return values


@dataclass(frozen=True)
class IntList:
    """A non-empty, space-separated list of distinct integers in ``[lo, hi]``."""

    lo: int = 0
    hi: int = 2**31 - 1

    def parse(self, name: str, text: str) -> tuple[int, ...]:
        allowed = f"a space-separated list of distinct integers in [{self.lo}, {self.hi}]"
        items = text.split()
        try:
            values = tuple(int(item) for item in items)
        except ValueError:
            values = ()
        if not values or any(not self.lo <= v <= self.hi for v in values) or len(set(values)) != len(values):
            raise UserError(f"{name}={text!r} is not allowed: must be {allowed}; {FIX}")
        return values


def nm_pattern(text: str) -> tuple[int, int] | None:
    """``"2:4"`` -> (2, 4): an N:M pattern with 1 <= N < M; None when ``text`` is not one."""
    m = re.fullmatch(r"(\d+):(\d+)", text)
    return (int(m[1]), int(m[2])) if m and 1 <= int(m[1]) < int(m[2]) else None


@dataclass(frozen=True)
class PatternList:
    """A space-separated list of distinct N:M patterns (1 <= N < M), possibly empty: ((N, M), ...)."""

    def parse(self, name: str, text: str) -> tuple[tuple[int, int], ...]:
        patterns = []
        for item in text.split():
            pattern = nm_pattern(item)
            if pattern is None:
                raise UserError(f"{name}={text!r}: {item!r} is not N:M with 1 <= N < M (e.g. 2:4 4:8); {FIX}")
            patterns.append(pattern)
        if len(set(patterns)) != len(patterns):
            raise UserError(f"{name}={text!r} repeats a pattern: list each once; {FIX}")
        return tuple(patterns)


@dataclass(frozen=True)
class Name:
    """A name usable as a directory name."""

    pattern: str = r"[A-Za-z0-9][A-Za-z0-9._-]*"

    def parse(self, name: str, text: str) -> str:
        if not re.fullmatch(self.pattern, text) or text in ("latest",):
            raise UserError(
                f"{name}={text!r} is not allowed: use letters, digits, '.', '_' and '-' "
                f"(not starting with a punctuation mark, not 'latest'); {FIX}"
            )
        return text


@dataclass(frozen=True)
class Text:
    """Free text, non-empty unless ``may_be_empty``."""

    may_be_empty: bool = False

    def parse(self, name: str, text: str) -> str:
        if not text and not self.may_be_empty:
            raise UserError(f"{name} is empty: give it a value; {FIX}")
        return text


@dataclass(frozen=True)
class Words:
    """A space-separated list of distinct names, non-empty unless ``may_be_empty``. Which names exist is the
    consumer's registry's business (e.g. the matrix looks each ADAMWPRUNE_VARIANTS entry up and names the
    allowed ones)."""

    may_be_empty: bool = False

    def parse(self, name: str, text: str) -> tuple[str, ...]:
        words = tuple(text.split())
        if not words and self.may_be_empty:
            return ()
        if not words or len(set(words)) != len(words):
            raise UserError(f"{name}={text!r} is not allowed: give a space-separated list of distinct names; {FIX}")
        return words


@dataclass(frozen=True)
class LongOptions:
    """Command-line long options for another program (``--name`` or ``--name=value``), space-separated;
    a value holding spaces is quoted as in a shell (``--comment='two words'``)."""

    def parse(self, name: str, text: str) -> tuple[str, ...]:
        try:
            words = tuple(shlex.split(text))
        except ValueError as e:
            raise UserError(f"{name}={text!r} is not allowed: {e}; {FIX}") from None
        bad = [w for w in words if not re.fullmatch(r"--[A-Za-z][A-Za-z0-9-]*(=.*)?", w)]
        if bad:
            raise UserError(
                f"{name}={text!r} is not allowed: {bad[0]!r} is not --option or --option=value "
                f'(e.g. "--mail-type=END --exclude=node17"); {FIX}'
            )
        return words


POSITIVE = Float(0.0, open_lo=True)
NON_NEGATIVE = Float(0.0)
FRACTION = Float(0.0, 1.0, open_hi=True)

DECLARATIONS = "kconfig_types.py"  # beside a Kconfig file: ``STRING_TYPES``, its string symbols' types
_DECLARED: dict[Path, Mapping[str, Any]] = {}


def _declared_in(path: Path) -> Mapping[str, Any]:
    """The ``STRING_TYPES`` of one declaration file. The file is executed by its path, not imported through its
    package: a package's ``__init__`` may import torch (``lib/optimizers``), and loading a config stays light;
    and ``lib/`` finds ``models/gpt2/kconfig_types.py`` through the Kconfig tree, never by a name in code."""
    if path not in _DECLARED:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts) if path.is_relative_to(ROOT) else path.stem
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _DECLARED[path] = MappingProxyType(dict(module.STRING_TYPES))
    return _DECLARED[path]


def string_types(kconf: kconfiglib.Kconfig) -> Mapping[str, Any]:
    """The type of every string symbol of ``kconf``'s tree, merged from the :data:`DECLARATIONS` file beside each
    Kconfig file. A file may type only string symbols defined by Kconfig files of its own directory, and every
    string symbol must be typed; anything else is a bug in the tree and raises ``RuntimeError``."""
    srctree = Path(kconf.srctree or ".")
    defined_in = {
        sym.name: srctree / sym.nodes[0].filename
        for sym in kconf.unique_defined_syms
        if sym.orig_type == kconfiglib.STRING
    }
    types: dict[str, Any] = {}
    for directory in sorted({(srctree / f).parent for f in kconf.kconfig_filenames}):
        path = directory / DECLARATIONS
        if not path.is_file():
            continue
        for name, kind in _declared_in(path).items():
            if name not in defined_in or defined_in[name].parent != directory:
                raise RuntimeError(
                    f"{path} types {name}, which is not a string symbol of a Kconfig file in {directory}: "
                    "declare a symbol's type beside the Kconfig file that defines it"
                )
            types[name] = kind
    untyped = sorted(set(defined_in) - set(types))
    if untyped:
        name = untyped[0]
        raise RuntimeError(
            f"string symbol {name} ({defined_in[name]}) has no type: add it to STRING_TYPES in "
            f"{defined_in[name].parent / DECLARATIONS}"
        )
    return MappingProxyType(types)
