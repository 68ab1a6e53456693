"""Triton's interpreter for this directory's tests: ``TRITON_INTERPRET`` must be on when ``triton.jit`` decorates
the kernel (``kernels.sparse_gemv.kernel`` is imported lazily: by these tests, or by ``SparseGemvLinear`` on its
Triton path) and while it runs. Set per test, so the other tests keep the environment they were given."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def triton_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "1")
