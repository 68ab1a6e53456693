"""Shared test helpers: write real .config files, run the real runner and make, read run directories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lib import config as cfgmod

ROOT = cfgmod.ROOT
# Subprocess timeouts in the tests guard against a hang only: sized for a machine loaded by other jobs, they
# never decide an outcome (a test that needs an order of events waits for the event, not for a time).
HANG_GUARD_SECONDS = 1800


def write_config(path: Path, results_dir: Path, *overrides: str, defconfig: str = "quickstart") -> Path:
    """A real .config: ``defconfigs/<defconfig>`` + overrides, results under ``results_dir``."""
    kconf = cfgmod.load_kconfig()
    cfgmod.load_file(kconf, cfgmod.DEFCONFIGS / defconfig)
    cfgmod.apply_overrides(kconf, [f"RESULTS_DIR={results_dir}", *overrides])
    cfgmod.validate(cfgmod.to_config(kconf))
    kconf.write_config(str(path), save_old=False)
    return path


def runner(*args: str, timeout: float = HANG_GUARD_SECONDS, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lib.runner", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw
    )


def make_cmd(*args: str) -> list[str]:
    return ["make", "--no-print-directory", "-C", str(ROOT), *args]


def processes_mentioning(path: Path) -> list[int]:
    """Pids of the processes whose command line names ``path`` (Linux /proc): a run's training process, or an
    orphan that should not exist."""
    needle = str(path).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def make_env() -> dict:
    """make uses the virtualenv the tests run in, whatever it is called."""
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)
    return env
