"""A tiny GPT-2 trained in process with PRUNING_BANDED: with KERNELS_BANDED=y its MLPs run the banded kernel and
the losses match the masked-dense run's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lib import config as cfgmod
from lib import results
from lib.matrix import expand
from lib.tasks import LanguageModeling
from lib.training import RunContext, fit
from models.gpt2.model import GPT2, GPT2Config
from tests.helpers import write_config

STEPS = 20
# fp32, 20 AdamW steps: the two paths sum in different orders, so losses drift apart by rounding only
LOSS_TOLERANCE = 1e-4

SETTINGS = (
    "MODEL_LENET5=n",
    "MODEL_GPT2=y",
    "OPTIMIZER_SGD=n",
    "PRUNING_MAGNITUDE=n",
    "PRUNING_BANDED=y",
    "BANDED_FC1_BANDWIDTHS=12",
    "BANDED_FC2_BANDWIDTHS=12",
    "BATCH_SIZE=2",
    f"GPT2_MAX_ITERS={STEPS}",
    f"GPT2_EVAL_INTERVAL={STEPS}",
    "LOG_INTERVAL=1",
    "MEMORY_SAMPLE_MS=0",
)


def _train(tmp_path: Path, name: str, *extra: str) -> tuple[list[float], dict]:
    cfg = cfgmod.load(write_config(tmp_path / f"{name}.config", tmp_path / "results", *SETTINGS, *extra))
    # the pruning axis may hold other methods too: train the banded run, both widths at 12
    runs = expand(cfg).runs
    (spec,) = [r for r in runs if r.axes["pruning"] == "banded" and r.axes["fc1_band"] == r.axes["fc2_band"]]
    run_dir = tmp_path / name
    run_dir.mkdir()
    results.atomic_write_json(run_dir / results.CONFIG, spec.to_json())
    ctx = RunContext.open(run_dir, 1)
    model = GPT2(GPT2Config(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=320))
    tokens = np.arange(3000, dtype=np.uint16) % 251
    task = LanguageModeling(
        tokens, tokens[:200], ctx.device, 2, 8, max_iters=STEPS, eval_interval=STEPS, eval_batches=2
    )
    summary = fit(ctx, model, task)
    rows = results.read_jsonl(run_dir / results.METRICS)
    return [r["loss"] for r in rows if r.get("split") == "train" and "loss" in r], summary


@pytest.mark.parametrize("block", [8])
def test_banded_kernel_run_matches_masked_dense(tmp_path: Path, block: int) -> None:
    dense, dense_summary = _train(tmp_path, "dense")
    banded, summary = _train(tmp_path, "banded", "KERNELS_BANDED=y", f"BANDED_KERNEL_BLOCK={block}")
    assert summary["kernels"] == {
        "banded": [f"transformer.h.{i}.mlp.{fc}" for i in range(2) for fc in ("c_fc", "c_proj")]
    }
    assert dense_summary["kernels"] == {}
    assert len(dense) == len(banded) >= STEPS // 2
    np.testing.assert_allclose(banded, dense, atol=LOSS_TOLERANCE, rtol=0)
