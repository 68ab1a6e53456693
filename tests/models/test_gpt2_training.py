"""GPT-2 through the real runner on the embedded corpus: it learns, the token task is deterministic, gradient
accumulation is the big batch, and a SIGKILLed run resumes bit-identically."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from lib import checkpoint, results
from lib.config import ROOT
from lib.data.shards import read_shard
from lib.tasks import LanguageModeling
from models.gpt2.model import GPT2, GPT2Config
from tests.helpers import HANG_GUARD_SECONDS, assert_memory_timeline, computed_rows, runner, write_config

SMALL = (
    "MODEL_LENET5=n",
    "MODEL_GPT2=y",
    "OPTIMIZER_SGD=n",
    "PRUNING_MAGNITUDE=n",
    "ADAMW_LR=3e-3",
    "LR_WARMUP_STEPS=20",
    "BATCH_SIZE=8",
    "GPT2_SIZE=custom",
    "GPT2_N_LAYER=2",
    "GPT2_N_HEAD=4",
    "GPT2_N_EMBD=64",
    "GPT2_BLOCK_SIZE=128",
    "GPT2_EVAL_BATCHES=8",
)


def _config(tmp_path: Path, name: str, *extra: str) -> Path:
    return write_config(
        tmp_path / f"{name}.config",
        tmp_path / "results",
        *SMALL,
        f"MATRIX_NAME={name}",
        f"DATA_DIR={tmp_path / 'data'}",
        *extra,
    )


def _entropy_nats(tokens: np.ndarray) -> float:
    counts = np.array(list(Counter(tokens.tolist()).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


@pytest.mark.slow
def test_gpt2_learns_the_embedded_corpus_well_below_its_byte_entropy(tmp_path: Path):
    cfg = _config(tmp_path, "learn", "GPT2_MAX_ITERS=300", "GPT2_EVAL_INTERVAL=100")
    proc = runner("run", "--config", str(cfg))
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "results/learn/gpt2-adamw-none-seed0"
    summary = json.loads((run / "summary.json").read_text())
    val = read_shard(tmp_path / "data/gpt2/pydoc-byte/val_000000.bin")
    unigram = _entropy_nats(np.asarray(val))  # ~3.3 nats: the best a model without context can do
    assert summary["final"]["loss"] < unigram - 0.3, (summary["final"], unigram)
    assert summary["final"]["perplexity"] == pytest.approx(math.exp(summary["final"]["loss"]))
    assert summary["throughput_unit"] == "tokens/s" and summary["steps"] == 300
    evals = [r for r in results.read_jsonl(run / "metrics.jsonl") if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [100, 200, 300]
    assert [r["tokens"] for r in evals] == [100 * 8 * 128.0, 200 * 8 * 128.0, 300 * 8 * 128.0]


def _task(batch: int = 4, accum: int = 1) -> LanguageModeling:
    tokens = np.arange(5000, dtype=np.uint16) % 251
    return LanguageModeling(
        tokens, tokens[:1000], torch.device("cpu"), batch, 16, grad_accum=accum, max_iters=25, eval_interval=10
    )


def test_token_batches_are_a_function_of_seed_and_period_and_resume_mid_period():
    task = _task()
    assert task.periods(None) == [10, 10, 5]
    full = list(task.batches(0, 1, 0, 10))
    assert len(full) == 10 and full[0][0].shape == (4, 16)
    assert all(torch.equal(x[:, 1:], y[:, :-1]) for x, y in full)  # targets are the inputs shifted by one
    again = list(task.batches(0, 1, 3, 10))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full[3:], again, strict=True))
    assert not torch.equal(full[0][0], next(task.batches(0, 2, 0, 10))[0])  # another period, other windows
    assert not torch.equal(full[0][0], next(task.batches(1, 1, 0, 10))[0])  # another seed, other windows
    assert torch.equal(task.val_offsets, _task().val_offsets)  # validation windows never move


def test_gradient_accumulation_is_the_big_batch():
    torch.manual_seed(0)
    model = GPT2(GPT2Config(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=256))
    big, small = _task(batch=8), _task(batch=4, accum=2)
    batch = next(big.batches(0, 0, 0, 10))
    assert torch.equal(batch[0], next(small.batches(0, 0, 0, 10))[0])  # same 8 windows per step
    big.loss(model, batch).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    micro = small.micro_batches(batch)
    assert len(micro) == 2 and micro[0][0].shape == (4, 16)
    for part in micro:
        (small.loss(model, part) / len(micro)).backward()
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)  # same maths, summed in another order


@pytest.mark.slow
def test_gpt2_sigkill_then_continue_is_bit_identical(tmp_path: Path):
    settings = ("GPT2_MAX_ITERS=60", "GPT2_EVAL_INTERVAL=20", "CHECKPOINT_INTERVAL=7", "LOG_INTERVAL=5")
    proc = runner("run", "--config", str(_config(tmp_path, "reference", *settings)))
    assert proc.returncode == 0, proc.stderr

    cfg = _config(tmp_path, "killed", *settings)
    run = tmp_path / "results/killed/gpt2-adamw-none-seed0"
    child = subprocess.Popen(
        [sys.executable, "-m", "lib.runner", "run", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while time.monotonic() < deadline:  # kill once a checkpoint exists and training has gone past it
        status = results.read_json(run / "status.json") or {}
        if (run / "checkpoint.pt").exists() and status.get("step", 0) % 7 and status.get("step", 0) > 7:
            break
        time.sleep(0.02)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    step_at_kill = checkpoint.load(run / "checkpoint.pt")["state"]["step"]
    assert 0 < step_at_kill < 60, "the run was not interrupted mid-way"

    proc = runner("continue", "--config", str(cfg), "--matrix", str(tmp_path / "results/killed"))
    assert proc.returncode == 0, proc.stderr
    a = checkpoint.load(tmp_path / "results/reference/gpt2-adamw-none-seed0/checkpoint.pt")
    b = checkpoint.load(run / "checkpoint.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    ref_rows = results.read_jsonl(tmp_path / "results/reference/gpt2-adamw-none-seed0/metrics.jsonl")
    rows = results.read_jsonl(run / "metrics.jsonl")
    assert computed_rows(rows) == computed_rows(ref_rows)  # memory rows measure the machine, not the maths
    assert_memory_timeline(rows)


def test_mfu_is_tokens_per_second_times_flops_per_token_over_the_peak(monkeypatch):
    from lib import trainer
    from lib.trainer import TrainState
    from lib.training import Speed

    model = GPT2(GPT2Config(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=64))
    task, state = _task(), TrainState(samples=3_000_000, train_seconds=2.0)
    assert trainer.mfu(model, task, state, torch.device("cpu"), Speed()) is None  # no peak on a CPU
    monkeypatch.setattr(trainer, "peak_flops", lambda device, precision: 1e12)
    expected = 1_500_000 * model.flops_per_token() / 1e12
    assert trainer.mfu(model, task, state, torch.device("cpu"), Speed()) == pytest.approx(expected)
