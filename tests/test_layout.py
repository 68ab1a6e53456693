"""The environment installs the project's dependencies, not the project: `lib`, `models`, `kernels` and
`scripts` are generic names (and `kernels` is a published package), so outside the checkout none of them may
resolve to this project's code."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import HANG_GUARD_SECONDS, ROOT

TOP_LEVEL = ("lib", "models", "kernels", "scripts")


def test_no_package_of_the_checkout_is_importable_from_elsewhere(tmp_path: Path) -> None:
    code = (
        "import importlib.util, json\n"
        f"specs = {{n: importlib.util.find_spec(n) for n in {TOP_LEVEL!r}}}\n"
        "print(json.dumps({n: s.origin if s else None for n, s in specs.items()}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_GUARD_SECONDS
    )
    assert result.returncode == 0, result.stderr
    for name, origin in json.loads(result.stdout).items():
        assert origin is None or ROOT not in Path(origin).resolve().parents, f"`import {name}` finds {origin}"


def test_from_the_checkout_they_are_the_project() -> None:
    import kernels
    import lib

    assert Path(lib.__file__).resolve().parent == ROOT / "lib"
    assert Path(kernels.__file__).resolve().parent == ROOT / "kernels"


def test_lib_imports_nothing_from_models_or_scripts() -> None:
    """Layers only look down: lib/ is the ground the models and scripts stand on (models are found by
    lib.model_registry walking models/, never imported by name)."""
    offenders = []
    for path in sorted((ROOT / "lib").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("models", "scripts")]
    assert offenders == []


def test_the_scheduling_hint_names_existing_test_files() -> None:
    from tests.conftest import LONGEST_FIRST

    assert [p for p in LONGEST_FIRST if not (ROOT / p).is_file()] == []
