"""Fixtures shared by the kernels' tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def without_c_compiler(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """A machine without a C compiler (``CC`` names none) and an empty kernel cache: the C kernels say why they
    cannot run and their callers fall back. What was loaded or said is forgotten before and after."""
    from kernels import clib
    from kernels.banded import cpu as banded_cpu
    from kernels.sparse_gemv import cpu as gemv_cpu

    caches = (banded_cpu._load, gemv_cpu._load, clib.warn_unavailable)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler")
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()
