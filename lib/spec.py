"""The data types of a matrix, at the ground floor: what a family declares (:class:`Axis`, :class:`Rule`) and
what a cell of the matrix is (:class:`RunSpec`).

Every family (a model, an optimizer, a pruning method) declares the matrix axes and validity rules it adds as
``AXES`` and ``RULES`` on the object its registry holds (a model: on its package, ``models/<name>/__init__.py``);
:mod:`lib.matrix` collects them through the registries and stays generic. Nothing here imports torch, so a
matrix is planned without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lib.config import Config, migrate


@dataclass(frozen=True)
class Axis:
    """One dimension of the matrix. ``after`` places a family's axis right after a core axis (``model``,
    ``optimizer``, ``pruning``, ``target_sparsity``), so the run ids read in a fixed order."""

    name: str
    values: Callable[[Config], list]
    label: Callable[[Any], str] = str  # "" leaves the axis out of the run id for that value
    in_id: str = "always"  # or "varies"
    empty_hint: str = ""
    after: str | None = None


@dataclass(frozen=True)
class Rule:
    """A combination that makes no sense: ``collapse`` rewrites the cell; without it the cell is dropped."""

    reason: str
    applies: Callable[[dict, Config], bool]  # (cell, the matrix's config)
    collapse: Callable[[dict], dict] | None = None


@dataclass(frozen=True)
class RunSpec:
    """One cell of the matrix: its id, its axis values and the full config it runs with."""

    run_id: str
    matrix: str
    axes: dict
    cfg: Config = field(compare=False)

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id,
            "matrix": self.matrix,
            "axes": dict(self.axes),
            "values": self.cfg.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict) -> RunSpec:
        # A run recorded before a choice was renamed reads under today's names (lib.config.RENAMED).
        values = migrate(d["values"], d["axes"].get("model"))
        return cls(d["run_id"], d["matrix"], dict(d["axes"]), Config.from_json(values))


def selected(cfg: Config, prefix: str, names: tuple[str, ...]) -> list[str]:
    """The ``names`` whose bool symbol ``<prefix>_<NAME>`` is set: a multi-select axis of a family."""
    return [n for n in names if cfg.get(f"{prefix}_{n.upper()}")]
