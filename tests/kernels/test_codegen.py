"""The Triton kernels compiled for Hopper (sm_90) without a GPU (``python -m kernels.codegen``): each product of
the banded kernel is one cp.async-pipelined loop into wgmma without register spills, dW's runs of tokens add with
fire-and-forget atomics, and the sparse GEMV's K loop is pipelined and its splits finish in the launch that ran
them. What a GPU run would only show as time, read from the machine code on any machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kernels.runtime import triton_installed

if not triton_installed():
    pytest.skip("Triton is not installed (Linux x86-64 only)", allow_module_level=True)


@pytest.fixture(scope="module")
def rows() -> dict[str, dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compiled, not interpreted
    done = subprocess.run([sys.executable, "-m", "kernels.codegen", "--json"], capture_output=True, text=True, env=env)
    if done.returncode == 2 and "cuobjdump" in done.stdout:
        pytest.skip(done.stdout.strip())
    assert done.returncode == 0, done.stderr[-2000:]
    return {row["kernel"]: row for row in json.loads(done.stdout.strip().splitlines()[-1])}


@pytest.mark.parametrize(
    "kernel",
    ["banded forward", "banded dX", "banded dW, 1 run of tokens", "banded dW, 4 runs of tokens"],
)
def test_each_banded_product_is_a_pipelined_wgmma_loop(rows: dict[str, dict], kernel: str) -> None:
    row = rows[kernel]
    assert row["HGMMA"] > 0 and row["HMMA"] == 0  # Hopper's warpgroup product, not the older one
    assert row["LDGSTS"] > 0  # the loop's copies are cp.async: software-pipelined
    assert row["LDL"] == row["STL"] == 0  # no register spills


def test_dw_runs_of_tokens_add_without_fences_or_returned_values(rows: dict[str, dict]) -> None:
    single, split = rows["banded dW, 1 run of tokens"], rows["banded dW, 4 runs of tokens"]
    assert single["REDG"] == single["ATOMG"] == 0 and single["STG"] > 0  # one run stores
    assert split["REDG"] > 0 and split["ATOMG"] == 0 and split["STG"] == 0  # relaxed adds: REDG, not ATOMG


def test_the_sparse_gemv_loop_is_pipelined_and_its_splits_add_relaxed_then_count_once(rows: dict[str, dict]) -> None:
    row = rows["sparse_gemv"]
    assert row["LDGSTS"] > 0 and row["LDL"] == row["STL"] == 0
    # the partial sums: fire-and-forget adds; the arrival count: one fenced atomic that returns the count
    assert row["REDG"] > 0 and row["ATOMG"] == 1 and row["MEMBAR"] >= 1
    assert row["STG"] >= 3  # the last split stores y, the zeroed sums and the zeroed count: no other kernel does


def test_masked_weight_is_a_plain_elementwise_pass(rows: dict[str, dict]) -> None:
    row = rows["banded masked_weight"]
    assert row["LDG"] > 0 and row["STG"] > 0 and row["LDL"] == row["STL"] == 0 and row["shared"] == 0


@pytest.mark.parametrize("kernel", ["banded forward", "banded dX", "banded dW, 1 run of tokens"])
def test_the_autotuner_s_shared_memory_estimate_is_what_the_compiler_allocates(rows, kernel: str) -> None:
    """kernel.shared_bytes (what the autotuner prunes configs by) against the compiled kernel's own figure."""
    import triton

    from kernels import codegen
    from kernels.banded import kernel as banded

    case = next(c for c in codegen.CASES if c.name == kernel)
    fn = getattr(banded, case.kernel.split(":")[1])
    config = triton.Config(case.constexprs, num_warps=case.num_warps, num_stages=case.num_stages)
    assert banded.shared_bytes(fn, config, 2) == rows[kernel]["shared"]
