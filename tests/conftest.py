"""Triton's interpreter on machines without a GPU.

``TRITON_INTERPRET=1`` only works if it is set before Triton is first imported in the process: Triton decides
at decoration time whether a ``@triton.jit`` function is compiled or interpreted, and ``triton.language``'s
own helpers (``tl.zeros``, ``tl.cdiv``, ...) are decorated when ``triton`` is imported. A kernel launched under
the interpreter after that fails inside ``tl.zeros`` ("Cannot call @triton.jit'd outside of the scope of a
kernel"), whoever imported Triton first. Without CUDA the interpreter is the only way Triton runs, so here the
variable is on while the test modules are imported (Triton, and every kernel module imported at collection, is
built for the interpreter) and back to its previous value once collection ends: the tests run in the
environment they were given, and a test of a Triton kernel switches it on for itself
(``monkeypatch.setenv("TRITON_INTERPRET", "1")``), so :func:`kernels.runtime.use_triton` holds on CPU tensors
for that test only. With CUDA nothing changes: kernels compile for the GPU.
"""

from __future__ import annotations

import importlib.util
import os

import torch

_PREVIOUS = os.environ.get("TRITON_INTERPRET")
_INTERPRET = not torch.cuda.is_available() and importlib.util.find_spec("triton") is not None

if _INTERPRET:
    os.environ["TRITON_INTERPRET"] = "1"
    import triton  # noqa: F401  # built for the interpreter now, whichever test imports it first


def pytest_collection_finish(session) -> None:
    if _INTERPRET:
        if _PREVIOUS is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = _PREVIOUS


# The test files that take longest on 2 cores (measured with `pytest --durations=0`), longest first. `make test`
# hands whole files to its workers (--dist loadfile) in collection order (--no-loadscope-reorder; xdist's own
# order, most tests first, leaves a long file for last and one worker idle while it runs): these go out first,
# so the many short files fill in at the end. Every entry must exist (tests/test_layout.py).
LONGEST_FIRST = (
    "tests/lib/test_runner.py",
    "tests/models/test_gpt2_training.py",
    "tests/models/test_resnet.py",
    "tests/lib/test_resume.py",
    "tests/lib/test_interrupt.py",
    "tests/models/test_gpt2_ddp.py",
    "tests/scripts/test_figures.py",
    "tests/lib/test_user_failures.py",
    "tests/scripts/test_update_graphs.py",
    "tests/models/test_gpt2_reciprocal_ablation.py",
    "tests/scripts/test_bench_resnet.py",
)


def pytest_collection_modifyitems(session, config, items) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order
