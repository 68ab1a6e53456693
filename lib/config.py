"""The one configuration loader: Kconfig tree + ``.config`` (+ overrides) -> a typed, frozen :class:`Config`.

Every knob the code reads comes through here. ``.config`` files and defconfigs are read with kconfiglib's
typed symbols (never regexes) and strictly, the way Zephyr does it:

* an assignment to a symbol the Kconfig tree does not define is an error, with close matches;
* an assignment that does not stick (unmet ``depends on``, value outside an int ``range``, a choice member
  that is not selected) is an error naming the dependency or the range;
* malformed lines and duplicate assignments are errors.

Kconfig has no float type, so floats and lists are ``string`` symbols. Each subsystem types its own: a
``kconfig_types.py`` beside its Kconfig file maps each string symbol defined there to one of the types of
:mod:`lib.config_types` (``Float``, ``FloatList``, ...), whose :func:`string_types` finds those files by walking
the directories of the Kconfig tree's files and merges them; the values are validated once, here. A string
symbol without a type is an error (at load time and in a test), so there is exactly one place that knows a
knob's type and range, next to the knob.

Values in a :class:`Config`: ``bool`` symbols -> ``bool``; ``int`` -> ``int``; typed strings -> ``float``,
``tuple`` or ``str``; a named ``choice`` NAME -> the lower-case suffix of its selected member
(``LENET5_POOL_MAX`` -> ``cfg["LENET5_POOL"] == "max"``).
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import kconfiglib

from lib.config_types import FIX, string_types
from lib.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
KCONFIG = ROOT / "Kconfig"
DOTCONFIG = ROOT / ".config"
DEFCONFIGS = ROOT / "defconfigs"


# --------------------------------------------------------------------------- the typed config


@dataclass(frozen=True)
class Config:
    """Typed, read-only view of every Kconfig symbol (see the module docstring for the value types)."""

    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))

    def __getitem__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.values, n=3)
            hint = f" (close: {', '.join(close)})" if close else ""
            raise KeyError(f"no Kconfig symbol {name}{hint}") from None

    def __contains__(self, name: object) -> bool:
        return name in self.values

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.values.items()}

    @classmethod
    def from_json(cls, values: Mapping[str, Any]) -> Config:
        return cls({k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


# --------------------------------------------------------------------------- reading the Kconfig tree


def load_kconfig() -> kconfiglib.Kconfig:
    """Parse the Kconfig tree. ``srctree`` is the repository root whatever the working directory."""
    old = os.environ.get("srctree")
    os.environ["srctree"] = str(ROOT)
    try:
        kconf = kconfiglib.Kconfig(str(KCONFIG), warn_to_stderr=False, suppress_traceback=False)
    finally:
        if old is None:
            os.environ.pop("srctree", None)
        else:
            os.environ["srctree"] = old
    kconf.warn_assign_undef = True
    kconf.warn_assign_override = True
    kconf.warn_assign_redun = False
    return kconf


def _symbol_names(kconf: kconfiglib.Kconfig) -> list[str]:
    return [s.name for s in kconf.unique_defined_syms]


# Choices renamed since runs were first recorded: old name -> (new name, the models the old one belonged to).
# Members follow their choice (LENET5_DATASET_MNIST -> IMAGE_DATASET_MNIST). A recorded run is read under the
# new names (:func:`migrate`); a .config that still has an old name gets one line naming the new one.
RENAMED = {
    "LENET5_DATASET": ("IMAGE_DATASET", ("lenet5",)),
    "RESNET_DATASET": ("IMAGE_DATASET", ("resnet18", "resnet50")),
}


# Symbols removed with nothing to rename them to: name -> what replaced them. A ``.config`` line that assigns one
# is dropped (what it said is carried by the lines that replaced it, so an old ``.config`` still loads, and the
# next write leaves it out); an override that names one gets this line.
RETIRED = {
    "TRACKER": "the tracker choice is now one bool per tracker: TRACKER_TRACKIO=y and/or TRACKER_WANDB=y "
    "(neither: metrics.jsonl only)",
    "TRACKER_NONE": "no tracker is now neither TRACKER_TRACKIO nor TRACKER_WANDB set (the default)",
}


# Knobs whose default is not what the code did before they existed: a run recorded before one of them takes
# this value, so that a resumed run goes on as it started (movement pruning froze pruned weights; bitter3/4
# trained the base budget; no structural weights; no dense AdamWPrune baseline). bitter7/8/9's formulas changed
# to the published ones without a knob: a run of those variants recorded before then resumes with the new score.
BEFORE = {
    "PRUNING_MOVEMENT_FROZEN": True,
    "ADAMWPRUNE_BUDGET_SCALE_LONG": 1.0,
    "ADAMWPRUNE_WEIGHT_ATTENTION": 1.0,
    "ADAMWPRUNE_WEIGHT_MLP": 1.0,
    "ADAMWPRUNE_WEIGHT_COUPLING": 1.0,
    "ADAMWPRUNE_DENSE_BASELINE": False,
}


def _renamed(name: str) -> tuple[str, tuple[str, ...]] | None:
    """(new name, models) of an old choice or choice member name, else None."""
    for old, (new, models) in RENAMED.items():
        if name == old or name.startswith(old + "_"):
            return new + name[len(old) :], models
    return None


def migrate(values: Mapping[str, Any], model: str | None) -> dict[str, Any]:
    """A recorded run's values under today's names: a renamed choice that belonged to ``model`` takes its new
    name; one that belonged to other models is dropped (an old config held one per model). A symbol added
    since the run was recorded takes its default (as Kconfig gives it with ``model`` selected), so an old run
    directory resumes and plots with today's code; a new knob's default keeps the behaviour from before it."""
    out = {k: v for k, v in values.items() if _renamed(k) is None}
    for name, value in values.items():
        found = _renamed(name)
        if found and model in found[1]:
            out.setdefault(found[0], value)
    for name, value in BEFORE.items():
        out.setdefault(name, value)
    if model:
        for name, value in _defaults_with(model).values.items():
            out.setdefault(name, value)
    return out


def with_model_defaults(cfg: Config, model: str) -> Config:
    """``cfg`` with the symbols of ``model``'s menu it lacks (its menu is off) at their defaults: e.g. the corpus
    settings of the GPT-2 menu for a command that reads text whatever the .config trains."""
    return Config({**_defaults_with(model).values, **cfg.values})


@functools.cache
def _defaults_with(model: str) -> Config:
    """Every symbol at its default with ``MODEL_<model>`` the only model selected, as in a run's config."""
    models = [name for name in from_defaults([]).values if name.startswith("MODEL_")]
    try:
        return from_defaults([f"{name}={'y' if name == f'MODEL_{model.upper()}' else 'n'}" for name in models])
    except UserError:  # a model that no longer exists: no defaults to add
        return Config({})


def _unknown_symbol_error(kconf: kconfiglib.Kconfig, name: str, where: str) -> UserError:
    if name in RETIRED:
        return UserError(f"{where}: {name} no longer exists: {RETIRED[name]}")
    found = _renamed(name)
    if found:
        return UserError(
            f"{where}: {name} is now {found[0]} (one image dataset choice for every model); write {found[0]} "
            "instead, or choose the dataset again in `make menuconfig`"
        )
    close = difflib.get_close_matches(name, _symbol_names(kconf), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see `make menuconfig` for the symbols"
    return UserError(f"{where}: unknown Kconfig symbol {name}; {hint}")


def _int(sym: kconfiglib.Symbol, text: str) -> int:
    """Kconfig ints are decimal (leading zeros allowed), hex symbols base 16; ValueError otherwise."""
    return int(text, 16 if sym.orig_type == kconfiglib.HEX else 10)


def _is_helper(item) -> bool:
    """A promptless symbol set by ``select`` (``PRUNING_SPARSE``, ``ADAM_FAMILY``, ``IMAGE_MODEL``, ...)."""
    return (
        isinstance(item, kconfiglib.Symbol)
        and bool(item.nodes)
        and not any(n.prompt for n in item.nodes)
        and item.rev_dep is not item.kconfig.n
    )


def _selectors(helper: kconfiglib.Symbol) -> list[str]:
    """The symbols whose ``select`` sets ``helper``, through other helpers down to ones a user sets. kconfiglib
    keeps them as ``rev_dep = A || (B && <B's conditions>) || ...``; the conditions are left out."""
    names: list[str] = []

    def walk(expr) -> None:
        if isinstance(expr, tuple) and expr[0] == kconfiglib.OR:
            walk(expr[1])
            walk(expr[2])
            return
        selector = expr[1] if isinstance(expr, tuple) and expr[0] == kconfiglib.AND else expr
        if _is_helper(selector):
            walk(selector.rev_dep)
        elif isinstance(selector, kconfiglib.Symbol):
            names.append(selector.name)
        else:
            names.append(kconfiglib.expr_str(expr))

    walk(helper.rev_dep)
    return list(dict.fromkeys(names))


def _explain_dep(expr) -> str:
    """``expr_str`` plus, for promptless helpers in it, which user-visible symbols select them."""
    text = kconfiglib.expr_str(expr)
    for dep in sorted(kconfiglib.expr_items(expr), key=lambda s: s.name or ""):
        if _is_helper(dep):
            text += f" ({dep.name} is set by {' || '.join(_selectors(dep))})"
    return text


def _bound(sym: kconfiglib.Symbol, bound: kconfiglib.Symbol) -> str:
    """A range bound (a number or another symbol) as kconfiglib evaluates it: its value, 0 if not a number."""
    hexadecimal = sym.orig_type == kconfiglib.HEX
    try:
        value = int(bound.str_value, 16 if hexadecimal else 10)
    except ValueError:
        value = 0
    return hex(value) if hexadecimal else str(value)


def _range_text(sym: kconfiglib.Symbol) -> str:
    """``"lo..hi"`` of the range kconfiglib applies to an int/hex symbol: the first whose condition holds or,
    while the symbol's own dependencies are unmet (which turns every range off), the first that will hold once
    they are met (as the range's own ``if``, without the dependencies, says); ``""`` when no range applies."""
    active = [(low, high) for low, high, cond in sym.ranges if kconfiglib.expr_value(cond)]
    once_visible = [
        (low, high) for node in sym.nodes for low, high, cond in node.orig_ranges if kconfiglib.expr_value(cond)
    ]
    ranges = active or once_visible
    if not ranges:
        return ""
    low, high = ranges[0]
    return f"{_bound(sym, low)}..{_bound(sym, high)}"


def _int_allowed(sym: kconfiglib.Symbol) -> str:
    """What an int/hex symbol accepts, e.g. "an integer in 1..100000" or "any integer"."""
    span = _range_text(sym)
    if sym.orig_type == kconfiglib.HEX:
        return f"a hexadecimal integer in {span}" if span else "any hexadecimal integer"
    return f"an integer in {span}" if span else "any integer"


def _did_not_stick(sym: kconfiglib.Symbol, wanted: str, where: str) -> UserError:
    if sym.choice is not None and sym.choice.visibility == 0:
        why = f"its choice {sym.choice.name} depends on {_explain_dep(sym.choice.direct_dep)}, which is not met"
    elif sym.visibility == 0 and sym.nodes and sym.nodes[0].prompt:
        why = f"it depends on {_explain_dep(sym.direct_dep)}, which is not met"
    elif sym.orig_type in (kconfiglib.INT, kconfiglib.HEX) and _range_text(sym):
        why = f"the allowed range is {_range_text(sym)}"
    elif sym.choice is not None:
        why = f"it is a member of choice {sym.choice.name or '?'} and another member is selected"
    else:
        why = "it has no prompt, so it cannot be set"
    return UserError(f"{where}: {sym.name}={wanted} did not take effect ({why}); {FIX}")


def _check_assignments(kconf: kconfiglib.Kconfig, where: str) -> None:
    """Zephyr-style: every value a file assigned must be the value the symbol ended up with."""
    for sym in kconf.unique_defined_syms:
        user = sym.user_value
        if user is None or not any(n.prompt for n in sym.nodes):
            continue  # kconfiglib writes promptless helpers to .config; their values are always derived
        if sym.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE):
            if sym.choice is not None and user == 0:
                continue  # "is not set" on a choice member just means "not this one"
            wanted, got = kconfiglib.TRI_TO_STR[user], sym.str_value
        elif sym.orig_type in (kconfiglib.INT, kconfiglib.HEX):
            wanted, got = str(user), sym.str_value
            try:
                same = _int(sym, wanted) == _int(sym, got)
            except ValueError:
                same = False
            if same:
                continue
        else:
            wanted, got = user, sym.str_value
        if wanted != got:
            raise _did_not_stick(sym, wanted, where)


def _take_warnings(kconf: kconfiglib.Kconfig, where: str) -> None:
    warnings, kconf.warnings = kconf.warnings, []
    warnings = [w for w in warnings if _undefined_symbol(kconf, w) not in RETIRED]
    # Overrides are applied after the file is read, so only editing the file (or menuconfig) fixes it.
    fix = "correct or remove that line (`make menuconfig` rewrites the file)"
    for w in warnings:
        name = _undefined_symbol(kconf, w)
        if name:
            raise _unknown_symbol_error(kconf, name, where)
        m = re.search(r"the value '(.*)' is invalid for (\w+) ", w)  # kconfiglib names the symbol, not the file
        sym = kconf.syms.get(m.group(2)) if m else None
        if sym is not None and sym.orig_type in (kconfiglib.INT, kconfiglib.HEX):
            raise UserError(f"{where}: {sym.name}={m.group(1)}: {sym.name} takes {_int_allowed(sym)}; {fix}")
    if warnings:
        first = warnings[0].replace("\n", " ").strip()
        first = first.replace("warning: ignoring ", "")  # fatal here, and kconfiglib already names the file
        raise UserError(f"{first}; {fix}")


def _undefined_symbol(kconf: kconfiglib.Kconfig, warning: str) -> str | None:
    """The symbol a kconfiglib warning says is undefined, if it says so."""
    m = re.search(r"undefined symbol (\w+)", warning)
    return m.group(1).removeprefix(kconf.config_prefix) if m else None


def load_file(kconf: kconfiglib.Kconfig, path: str | os.PathLike, replace: bool = True) -> None:
    """Load a ``.config`` or defconfig into ``kconf``, strictly (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; run `make defconfig` or `make menuconfig` to create one")
    kconf.warnings = []
    kconf.load_config(str(path), replace=replace)
    _take_warnings(kconf, str(path))
    _check_assignments(kconf, str(path))


def override_name(kconf: kconfiglib.Kconfig, item: str) -> str:
    """The symbol (or named choice) a ``SYM=VALUE`` override assigns, without the ``CONFIG_`` prefix."""
    return item.partition("=")[0].strip().removeprefix(kconf.config_prefix)


def apply_overrides(kconf: kconfiglib.Kconfig, overrides: Iterable[str]) -> None:
    """Apply ``SYM=VALUE`` assignments (a named choice may be given as ``CHOICE=member``).

    All are set first and checked after, so their order does not matter, as in a file.
    """
    assigned: dict[kconfiglib.Symbol, str] = {}
    for item in overrides:
        _, sep, value = item.partition("=")
        name = override_name(kconf, item)
        if not sep or not name:
            raise UserError(f"override {item!r} is not SYM=VALUE; write e.g. SET=\"EPOCHS=3 SEEDS='0 1'\"")
        choice = next((c for c in kconf.unique_choices if c.name == name), None)
        if choice is not None:
            member = f"{name}_{value.upper()}"
            members = [s.name.removeprefix(name + "_").lower() for s in choice.syms]
            if member not in kconf.syms or kconf.syms[member].choice is not choice:
                raise UserError(f"override {name}={value}: allowed values are {', '.join(members)}")
            name, value = member, "y"
        sym = kconf.syms.get(name)
        if sym is None or not sym.nodes:
            raise _unknown_symbol_error(kconf, name, "override")
        if sym.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE) and value not in ("y", "n"):
            raise UserError(f"override {name}={value}: {name} is a bool, give y or n")
        if sym.orig_type in (kconfiglib.INT, kconfiglib.HEX):
            try:
                _int(sym, value)
            except ValueError:
                raise UserError(f"override {name}={value}: {name} takes {_int_allowed(sym)}; {FIX}") from None
        if not any(n.prompt for n in sym.nodes):
            raise _did_not_stick(sym, value, "override")
        sym.set_value(value)
        assigned[sym] = value  # the last assignment to a symbol wins, as in a file
    kconf.warnings = []
    for sym, value in assigned.items():
        got = sym.str_value
        if sym.orig_type in (kconfiglib.INT, kconfiglib.HEX):
            stuck = got != "" and _int(sym, got) == _int(sym, value)
        else:
            stuck = got == value
        if not stuck:
            raise _did_not_stick(sym, value, "override")


def split_overrides(text: str) -> list[str]:
    """Split ``SET="A=1 B='x y'"`` into assignments; values with spaces are quoted."""
    try:
        return shlex.split(text)
    except ValueError as e:
        raise UserError(f"override string {text!r} does not parse ({e}); quote values with spaces") from None


def to_config(kconf: kconfiglib.Kconfig) -> Config:
    """The typed view of ``kconf``'s current values; string symbols are validated here."""
    values: dict[str, Any] = {}
    types = string_types(kconf)
    for sym in kconf.unique_defined_syms:
        t = sym.orig_type
        if t in (kconfiglib.BOOL, kconfiglib.TRISTATE):
            values[sym.name] = sym.tri_value == 2
        elif t in (kconfiglib.INT, kconfiglib.HEX):
            values[sym.name] = _int(sym, sym.str_value) if sym.str_value else 0
        elif t == kconfiglib.STRING:
            kind = types[sym.name]
            visible_or_default = sym.str_value != "" or sym.visibility
            values[sym.name] = kind.parse(sym.name, sym.str_value) if visible_or_default else None
    for choice in kconf.unique_choices:
        if choice.name and choice.selection is not None:
            values[choice.name] = choice.selection.name.removeprefix(choice.name + "_").lower()
    return Config(values)


def validate(cfg: Config) -> None:
    """Cross-symbol rules that Kconfig cannot express."""
    if cfg["PRUNING_SPARSE"] and cfg["PRUNING_END_PERCENT"] < cfg["PRUNING_START_PERCENT"]:
        raise UserError(
            f"PRUNING_END_PERCENT={cfg['PRUNING_END_PERCENT']} is before "
            f"PRUNING_START_PERCENT={cfg['PRUNING_START_PERCENT']}: the end must be >= the start; {FIX}"
        )
    if cfg["OPTIMIZER_SGD"] and cfg["SGD_NESTEROV"] and cfg["SGD_MOMENTUM"] == 0:
        raise UserError(f"SGD_NESTEROV=y needs SGD_MOMENTUM > 0 (it is 0); {FIX}")


def load(config_path: str | os.PathLike = DOTCONFIG, overrides: Iterable[str] = ()) -> Config:
    """Load ``.config`` (strictly), apply overrides, validate and return the typed config."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise UserError(
            f"{config_path} does not exist: create it with `make defconfig-quickstart` "
            "(see `make list-defconfigs`) or `make menuconfig`"
        )
    kconf = load_kconfig()
    load_file(kconf, config_path)
    return _finish(kconf, overrides)


def from_defaults(overrides: Iterable[str] = ()) -> Config:
    """The Kconfig tree's defaults with ``overrides`` applied and validated, no ``.config`` read (benchmarks
    and tests that describe a config entirely by its differences from the defaults)."""
    return _finish(load_kconfig(), overrides)


def recorded_kconfig(values: Mapping[str, Any]) -> kconfiglib.Kconfig:
    """The Kconfig tree with a recorded run's bool (so also its choices) and int values set, the kinds of
    symbol that ``depends on`` tests, and every other symbol at its default: for checking assignments made
    on top of a run (``make sample SET=``), whose caller takes from it only the symbols they may set."""
    kconf = load_kconfig()
    for sym in kconf.unique_defined_syms:
        value = values.get(sym.name)
        if value is None or not any(n.prompt for n in sym.nodes):
            continue
        if sym.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE) and isinstance(value, bool):
            sym.set_value(2 if value else 0)
        elif sym.orig_type in (kconfiglib.INT, kconfiglib.HEX) and isinstance(value, int):
            sym.set_value(str(value))
    kconf.warnings = []
    return kconf


def _finish(kconf: kconfiglib.Kconfig, overrides: Iterable[str]) -> Config:
    apply_overrides(kconf, overrides)
    cfg = to_config(kconf)
    validate(cfg)
    return cfg
