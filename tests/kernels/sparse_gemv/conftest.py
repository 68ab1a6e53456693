"""Where the kernel runs in this directory's tests: on CUDA tensors, compiled, when there is a GPU; otherwise on
CPU tensors under Triton's interpreter. ``TRITON_INTERPRET`` must be on when ``triton.jit`` decorates the kernel
(``kernels.sparse_gemv.kernel`` is imported lazily: by these tests, or by ``SparseGemvLinear`` on its Triton
path) and while it runs; it is set per test, so the other tests keep the environment they were given."""

from __future__ import annotations

import pytest
import torch

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")


@pytest.fixture(autouse=True)
def triton_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    if not CUDA:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
