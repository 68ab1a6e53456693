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

# What the variable was before pytest started. xdist's workers start after the controller has switched the
# interpreter on, and inherit its environment, so the value is handed down under a name of its own.
_BEFORE = "SPARSITY_LAB_TRITON_INTERPRET_BEFORE_TESTS"
_UNSET = "<unset>"
os.environ.setdefault(_BEFORE, os.environ.get("TRITON_INTERPRET", _UNSET))
_PREVIOUS = None if os.environ[_BEFORE] == _UNSET else os.environ[_BEFORE]
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


def pytest_configure(config) -> None:
    """Under xdist, each worker keeps to CPUs of its own when there are at least as many CPUs as workers, and
    so does every process its tests start (the affinity is inherited; :func:`lib.process.usable_cpus` reads it
    for the training processes' threads, ``OMP_NUM_THREADS`` tells other scripts' torch). Otherwise two workers
    on 2 cores each start processes of 2 threads: 4 busy threads on 2 cores, whose parallel regions wait for each
    other's descheduled threads. Measured: the subprocess-heavy test files ran in 40-60% of their time. Without
    xdist, or with more workers than CPUs, nothing changes."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if not worker.startswith("gw") or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if count < 1 or count > len(cpus):
        return
    share = len(cpus) // count
    index = int(worker[2:])
    os.sched_setaffinity(0, cpus[index * share : (index + 1) * share])
    os.environ.setdefault("OMP_NUM_THREADS", str(share))
    torch.set_num_threads(share)  # this worker's own torch: its thread pool was sized for every CPU
