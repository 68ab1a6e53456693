"""The report's knobs: the "Graphs and report" menu (``scripts/update_graphs/Kconfig``), read once."""

from __future__ import annotations

from dataclasses import dataclass

from lib import config as config_mod
from lib.config import Config


@dataclass(frozen=True)
class GraphSettings:
    formats: tuple[str, ...]  # GRAPH_FORMATS: every figure is written in each; report.md links the first

    @classmethod
    def from_config(cls, cfg: Config) -> GraphSettings:
        return cls(formats=tuple(cfg["GRAPH_FORMATS"]))

    @classmethod
    def defaults(cls) -> GraphSettings:
        """The Kconfig defaults (for a caller without a config)."""
        return cls.from_config(config_mod.from_defaults())
