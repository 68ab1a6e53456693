"""``python -m scripts.update_graphs``: see the package's docstring."""

from lib.errors import run_cli
from scripts.update_graphs import main

run_cli(main)
