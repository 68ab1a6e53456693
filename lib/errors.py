"""The one exception type for errors a user can cause.

A :class:`UserError` carries a single line that names the thing that is wrong, the allowed values and the fix.
Command-line entrypoints catch it, print ``error: <message>`` to stderr and exit with status 2, with no
traceback. Anything else escaping is a bug and keeps its traceback. :class:`ArgumentParser` makes a bad
command-line argument one of those errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn


class UserError(Exception):
    """A bad input the user can fix: bad config value, missing data, unknown name."""


class ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose usage errors raise :class:`UserError`: under :func:`run_cli` a
    bad argument (``--tokens x``) ends in one ``error:`` line and exit status 2, not argparse's usage block.
    Subparsers made from it inherit this."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message}; see `{self.prog} --help`")


def run_cli(main: Callable[[], int | None]) -> None:
    """Run ``main`` and turn a :class:`UserError` into one line on stderr and exit status 2."""
    try:
        code = main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
