"""EVAL_AT_START and GPT-2's training samples, in process on a tiny GPT-2: a fresh run evaluates at step 0,
a run stopped and resumed does not evaluate there again and ends with the rows of a run never stopped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lib import config as cfgmod
from lib import results
from lib.data.text import ByteTokenizer
from lib.matrix import expand
from lib.tasks import LanguageModeling
from lib.trainer import Interrupted
from lib.training import RunContext, fit
from models.gpt2.model import GPT2, GPT2Config
from models.gpt2.train import TrainingSampler
from tests.helpers import computed_rows, write_config

SETTINGS = (
    "MODEL_LENET5=n",
    "MODEL_GPT2=y",
    "OPTIMIZER_SGD=n",
    "PRUNING_MAGNITUDE=n",
    "BATCH_SIZE=2",
    "GPT2_MAX_ITERS=6",
    "GPT2_EVAL_INTERVAL=3",
    "CHECKPOINT_INTERVAL=2",
    "LOG_INTERVAL=1",
    "MEMORY_SAMPLE_MS=0",
    "EVAL_AT_START=y",
    "GPT2_SAMPLE_INTERVAL=2",
    "GPT2_SAMPLE_TOKENS=4",
)


class StopAtCall:
    """A stop request that turns on at the ``n``-th time the loop asks (once per step mid-period)."""

    name = "a test stop"

    def __init__(self, n: int) -> None:
        self.calls, self.n = 0, n

    @property
    def requested(self) -> bool:
        self.calls += 1
        return self.calls >= self.n


def _run_dir(tmp_path: Path, name: str) -> Path:
    cfg = cfgmod.load(write_config(tmp_path / f"{name}.config", tmp_path / "results", *SETTINGS))
    (spec,) = expand(cfg).runs
    run_dir = tmp_path / name
    run_dir.mkdir()
    results.atomic_write_json(run_dir / results.CONFIG, spec.to_json())
    return run_dir


def _fit(run_dir: Path, stop=None) -> dict:
    ctx = RunContext.open(run_dir, 1)
    ctx.stop = stop
    model = GPT2(GPT2Config(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=320))
    tokens = np.arange(3000, dtype=np.uint16) % 251
    task = LanguageModeling(tokens, tokens[:200], ctx.device, 2, 8, max_iters=6, eval_interval=3, eval_batches=2)
    task.sampler = TrainingSampler(ByteTokenizer(), "ab", 4, every=2)
    return fit(ctx, model, task)


def _evals(run_dir: Path) -> list[int]:
    return [r["step"] for r in results.read_jsonl(run_dir / results.METRICS) if r["split"] == "eval"]


def test_fresh_run_evaluates_at_step_0_and_a_resumed_one_not_again(tmp_path: Path) -> None:
    reference = _run_dir(tmp_path, "reference")
    _fit(reference)
    assert _evals(reference) == [0, 3, 6]
    rows = results.read_jsonl(reference / results.METRICS)
    assert rows[0]["split"] == "eval" and rows[0]["step"] == 0 and rows[0]["loss"] > 0  # before any train row

    stopped = _run_dir(tmp_path, "stopped")
    with pytest.raises(Interrupted):
        _fit(stopped, StopAtCall(4))  # steps 1, 2 (period 1), then 4 mid-period of period 2: stops at step 4
    assert _evals(stopped) == [0, 3]
    assert torch.load(stopped / results.CHECKPOINT, weights_only=False)["state"]["step"] == 4
    env = results.read_json(stopped / results.ENV)
    _fit(stopped)  # resumes from the checkpoint of step 4 (a fresh start would write env.json anew)
    resumed = results.read_json(stopped / results.ENV)
    assert resumed["started"] == env["started"] and [r["at_step"] for r in resumed["resumed"]] == [4]
    assert _evals(stopped) == [0, 3, 6]
    assert computed_rows(results.read_jsonl(stopped / results.METRICS)) == computed_rows(rows)
    ref_ckpt, ckpt = (torch.load(d / results.CHECKPOINT, weights_only=False) for d in (reference, stopped))
    for key, value in ref_ckpt["model"].items():
        assert torch.equal(value, ckpt["model"][key]), key


def test_training_samples_every_interval_do_not_change_training(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "samples")
    summary = _fit(run)
    samples = results.read_jsonl(run / results.SAMPLES)
    assert [s["step"] for s in samples] == [2, 4, 6]
    assert all(s["prompt"] == "ab" and s["text"].startswith("ab") for s in samples)
    # Sampling draws from its own generator: the same run without a sampler has the same losses.
    plain = _run_dir(tmp_path, "plain")
    ctx = RunContext.open(plain, 1)
    model = GPT2(GPT2Config(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=320))
    tokens = np.arange(3000, dtype=np.uint16) % 251
    task = LanguageModeling(tokens, tokens[:200], ctx.device, 2, 8, max_iters=6, eval_interval=3, eval_batches=2)
    assert fit(ctx, model, task)["final"] == summary["final"]
