"""make bench-kernels' bookkeeping: rows of several devices in one CSV, replaced per (device, op), and the
per-(device, op) count of rows that reach their target."""

from __future__ import annotations

import pytest

from scripts.bench_common import write_rows
from scripts.bench_kernels import DECODE_OP, SwappableGPT2, bench_decode, bench_gpt2_decode, merged, targets_met


def _row(device: str, op: str, speedup: float, target: float | str = "") -> dict:
    return {"device": device, "op": op, "speedup": speedup, "target": target}


def test_a_run_replaces_only_the_device_and_ops_it_measured(tmp_path) -> None:
    path = tmp_path / "kernels.csv"
    write_rows(
        path,
        [
            _row("cpu", "banded_linear_fwd_bwd", 1.5, 4.0),
            _row("H200", "sparse_gemv", 1.0, 1.6),
            _row("H200", "banded_matmul_fwd", 2.0, 1.6),
        ],
    )
    rows = merged(path, [_row("H200", "sparse_gemv", 1.8, 1.6), _row("H200", "sparse_gemv", 3.0, 8.0)])
    assert [(r["device"], r["op"], float(r["speedup"])) for r in rows] == [
        ("cpu", "banded_linear_fwd_bwd", 1.5),  # another device: kept
        ("H200", "banded_matmul_fwd", 2.0),  # another op of this device: kept
        ("H200", "sparse_gemv", 1.8),  # this device and op: this run's rows
        ("H200", "sparse_gemv", 3.0),
    ]
    assert merged(tmp_path / "missing.csv", rows[:1]) == rows[:1]


def test_targets_are_counted_per_device_and_op() -> None:
    rows = [
        _row("cpu", "banded", 2.0, 2.0),  # equal to the target: reached
        _row("cpu", "banded", 1.9, 2.0),
        _row("cpu", "step", 1.3),  # no target: not counted
        _row("H200", "banded", "0.5", "1.0"),  # read back from the CSV: strings
    ]
    assert targets_met(rows) == [("cpu", "banded", 1, 2), ("H200", "banded", 0, 1)]


def test_a_decoding_row_times_one_banded_layer_against_dense() -> None:
    """A real (short) measurement: the kernel's output checked against dense's first, then both timed."""
    row = bench_decode(128, "fc2", 4, rounds=3)
    assert (row["op"], row["shape"], row["model"], row["target"]) == (DECODE_OP, "fc2 4x512->128", "gpt2-tiny", "")
    assert abs(row["density"] - 0.12) < 0.01 and row["dense_ms"] > 0 and row["kernel_ms"] > 0 and row["speedup"] > 0


def test_a_model_decoding_row_decodes_with_the_banded_and_the_dense_model() -> None:
    """GPT-2 tiny, banded on the C kernel and masked dense: the same logits (checked inside), then both timed
    generating tokens; the time is per token."""
    row = bench_gpt2_decode("tiny", 8, 3, rounds=1)
    assert (row["op"], row["shape"], row["model"]) == (
        "gpt2_tiny_banded_decode",
        "1x8 prompt + 3 tokens, 4 layers, C=128",
        "gpt2-tiny",
    )
    assert abs(row["density"] - 0.12) < 0.01 and row["dense_ms"] > 0 and row["kernel_ms"] > 0 and row["speedup"] > 0


def test_the_sides_of_a_gpt2_row_are_one_model_with_its_mlp_modules_swapped() -> None:
    """Each side's MLP modules hold the same parameters, so one optimizer trains all of them, and the rest of the
    model is the same tensors: swapping the banded modules in changes which code runs, not what it computes."""
    import torch

    from models.gpt2.model import GPT2Config

    cfg = GPT2Config.preset("tiny", vocab_size=512, dropout=0.0)
    gpt2 = SwappableGPT2(cfg, ("c", "torch"), 0, "train")
    params = [p.data_ptr() for p in gpt2.model.parameters()]
    idx = torch.randint(512, (2, 16), generator=torch.Generator().manual_seed(0))
    logits = {}
    for side in ("dense", "c", "torch"):
        model = gpt2.use(side)
        expected = "Linear" if side == "dense" else "BandedLinear"
        assert [type(m).__name__ for m in model.mlp_layers()[0]] == [expected, expected]
        assert [p.data_ptr() for p in model.parameters()] == params
        with torch.no_grad():
            logits[side] = model(idx)
    torch.testing.assert_close(logits["c"], logits["dense"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits["torch"], logits["dense"], rtol=1e-4, atol=1e-5)


def test_a_sparse_gemv_cpu_row_measures_the_c_kernel() -> None:
    """The CPU rows' measurement on a small layer: rows read, error against the fp64 reference, both timings."""
    import torch

    from kernels.sparse_gemv import bench as gemv_bench
    from kernels.sparse_gemv import cpu

    if cpu.unavailable():
        pytest.skip("no C compiler here: cpu_rows refuses to run")
    gen = torch.Generator().manual_seed(0)
    x, weight, bias = torch.randn(1, 256, generator=gen), torch.randn(96, 256, generator=gen), torch.randn(96)
    row = gemv_bench._cpu_row(x, weight, bias, 0.7, rounds=3)
    assert (row["op"], row["shape"], row["batch"], row["target"]) == ("sparse_gemv", "256->96", 1, round(0.8 / 0.3, 3))
    assert abs(row["rows_read"] - 0.3) < 0.01 and row["max_err"] < 1e-4
    assert row["dense_ms"] > 0 and row["kernel_ms"] > 0 and row["speedup"] > 0
