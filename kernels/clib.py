"""C kernels built on first use: a ``.c`` file with no torch or Python header, compiled by the system's C compiler
into the user's cache and loaded through ctypes (:mod:`kernels.banded.cpu`, :mod:`kernels.sparse_gemv.cpu`).

How. ``cc`` (``$CC`` if set) compiles the source with :data:`FLAGS` (``-march=native``: the vector width of the
machine it runs on; ``-fopenmp``: GCC's libgomp, the OpenMP runtime torch itself loads, so kernel and torch share
one thread pool) into ``$XDG_CACHE_HOME/sparsity-lab/<name>_cpu/`` (default ``~/.cache``): one library per
source, flags, compiler and CPU, so a home directory shared by different machines gets one per machine. About a
second, once per machine; written under a temporary name and renamed, so processes building at once do not
collide. Where it cannot be built (no compiler, say), :func:`load` says why and the caller runs its PyTorch path.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from kernels.runtime import cache_root

FLAGS = ("-O3", "-march=native", "-fopenmp", "-std=gnu11", "-shared", "-fPIC")
HEADER = Path(__file__).resolve().parent / "clib.h"  # what the kernels' sources share (their "../clib.h")

# a function's ctypes signature: (argument types, result type or None)
Signature = tuple[list, type | None]


def compiler() -> str | None:
    """The C compiler: ``$CC`` when set (its path, or None when it is not found), else ``cc`` or ``gcc``."""
    if os.environ.get("CC"):
        return shutil.which(os.environ["CC"])
    return shutil.which("cc") or shutil.which("gcc")


def cpu_identity() -> str:
    """The machine and its CPU's feature flags (what ``-march=native`` compiles for)."""
    lines = []
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.split(":")[0].strip() in ("flags", "Features", "model name")][:2]
    except OSError:
        pass
    return platform.machine() + "".join(lines)


def library_path(name: str, source: Path, cc: str, flags: tuple[str, ...] = FLAGS) -> Path:
    """Where the library ``name`` built by ``cc`` from ``source`` (and :data:`HEADER`) with ``flags`` for this
    CPU lives."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    key = "\n".join([source.read_text(), HEADER.read_text(), " ".join(flags), cc, version, cpu_identity()])
    return cache_root() / f"{name}_cpu" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.so"


def build(source: Path, cc: str, path: Path, flags: tuple[str, ...] = FLAGS) -> None:
    """Compile ``source`` into ``path`` (atomically); raises RuntimeError with the compiler's first error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    cmd = [cc, *flags, str(source), "-o", tmp]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            first = next((line for line in done.stderr.splitlines() if "error" in line), done.stderr.strip())
            raise RuntimeError(f"{' '.join(cmd)} failed: {first}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def bind(path: Path, signatures: dict[str, Signature]) -> ctypes.CDLL:
    """The library at ``path`` with the signatures of its functions (by symbol) set."""
    lib = ctypes.CDLL(str(path))
    for symbol, (argtypes, restype) in signatures.items():
        fn = getattr(lib, symbol)
        fn.argtypes, fn.restype = argtypes, restype
    return lib


def load(path_of, build_at, bind_at) -> tuple[ctypes.CDLL | None, str | None]:
    """(library, None), built first if need be, or (None, why not): ``path_of(cc)`` names the library,
    ``build_at(cc, path)`` builds it, ``bind_at(path)`` loads it (a kernel's own functions, so that its tests can
    swap the source)."""
    cc = compiler()
    if cc is None:
        wanted = f"CC={os.environ['CC']} is not" if os.environ.get("CC") else "no C compiler (cc or gcc) is"
        return None, f"{wanted} on PATH; install gcc (or set CC) for the compiled CPU kernel"
    path = path_of(cc)
    try:
        if not path.exists():
            build_at(cc, path)
        return bind_at(path), None
    except (RuntimeError, OSError) as err:
        return None, str(err)


@functools.cache
def warn_unavailable(log: logging.Logger, kernel: str, fallback: str, why: str | None) -> None:
    """One warning on ``log`` per reason (``why``; None: nothing to say) that ``kernel``'s compiled CPU kernel
    cannot run and ``fallback`` runs instead."""
    if why is not None:
        log.warning("%s: the compiled CPU kernel cannot run (%s); using %s", kernel, why, fallback)
