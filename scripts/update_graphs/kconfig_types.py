"""Types of the string symbols of ``scripts/update_graphs/Kconfig`` (the graphs and report menu).

Kconfig has no list type; :mod:`lib.config` reads this file (beside the Kconfig whose symbols it types) and
validates each value once, at load time. See :func:`lib.config_types.string_types`.
"""

from dataclasses import dataclass

from lib.config_types import FIX, Words
from lib.errors import UserError

GRAPH_FORMAT_NAMES = ("png", "svg", "pdf")  # what matplotlib writes for every figure of the report


@dataclass(frozen=True)
class Formats(Words):
    """A non-empty, space-separated list of distinct file formats out of ``allowed``."""

    allowed: tuple[str, ...] = GRAPH_FORMAT_NAMES

    def parse(self, name: str, text: str) -> tuple[str, ...]:
        words = super().parse(name, text)
        unknown = [w for w in words if w not in self.allowed]
        if unknown:
            raise UserError(
                f"{name}={text!r}: {unknown[0]!r} is not a graph format: use a space-separated list of "
                f"{', '.join(self.allowed)}; {FIX}"
            )
        return words


STRING_TYPES = {
    "GRAPH_FORMATS": Formats(),
}
