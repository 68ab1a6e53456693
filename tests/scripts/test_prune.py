"""`make prune`: a GPT-2 run of ours pruned one-shot into <run>/oneshot/<method>-<target>/; bad inputs are one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from lib import config as cfgmod
from lib import results
from lib.analysis.masks import load_mask_dir
from lib.errors import UserError
from lib.oneshot import ONESHOT
from scripts import prune
from tests.helpers import HANG_GUARD_SECONDS, gpt2_run, make_cmd, make_env

SETTINGS = "ONESHOT_SEQLEN=32 ONESHOT_EVAL_WINDOWS=2"


def _run_dir(tmp_path: Path) -> Path:
    return gpt2_run(tmp_path, f"DATA_DIR={tmp_path}", layers=2)


def test_prune_a_run_of_ours(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = _run_dir(tmp_path)
    argv = [str(run), "--method", "wanda", "--samples", "4", "--config", str(tmp_path / "none"), "--set", SETTINGS]
    assert prune.main(argv) == 0
    out = run / "oneshot" / "wanda-0.5"
    summary = results.read_json(out / "prune.json")
    assert summary["method"] == "wanda" and summary["calibration"]["samples"] == 4
    assert summary["calibration"]["seqlen"] == 32 and summary["calibration"]["corpus"] == "pydoc"
    assert len(summary["layers"]) == 8 and summary["sparsity"] == pytest.approx(0.5)
    assert (out / "layer1-mlp.c_proj-0-0-0.5.pt").exists() and (out / "model.pt").exists()
    assert "perplexity" in capsys.readouterr().out
    state = torch.load(out / "model.pt")["model"]
    assert (state["transformer.h.0.mlp.c_fc.weight"] == 0).float().mean() == pytest.approx(0.5)
    # a rerun replaces the directory's files, a file of an older naming included
    torch.save({"mask": torch.ones(2, 2, dtype=torch.bool)}, out / "layer0-fc1-512x128-0.5.pt")
    assert prune.main(argv) == 0
    assert not (out / "layer0-fc1-512x128-0.5.pt").exists() and len(load_mask_dir(out)) == 8


def test_methods_from_the_config_and_bad_values() -> None:
    cfg = cfgmod.from_defaults(["ONESHOT_WANDA=y", "ONESHOT_MAGNITUDE=y"])
    assert prune.methods_to_run(None, cfg) == ["magnitude", "wanda"]
    with pytest.raises(UserError, match="no METHOD given"):
        prune.methods_to_run(None, cfgmod.from_defaults())
    with pytest.raises(UserError, match="PATTERN='2-4' is not N:M"):
        prune.parse_pattern("2-4")
    knobs = ["ONESHOT_SPARSEGPT_PERCDAMP=0.1", "ONESHOT_SPARSEGPT_BLOCKSIZE=64"]
    method = prune.build_method("sparsegpt", cfgmod.from_defaults(knobs))
    assert method.settings == type(method.settings)(percdamp=0.1, blocksize=64)
    for name in ONESHOT:  # every Settings field is a knob ONESHOT_<NAME>_<FIELD>
        assert prune.build_method(name, cfgmod.from_defaults()).settings == ONESHOT[name].Settings()


def test_make_prune_bad_method_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        make_cmd("prune", f"RUN={tmp_path}", "METHOD=obs", f"KCONFIG_CONFIG={tmp_path / 'none'}"),
        env=make_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: METHOD='obs' is not a one-shot method: allowed values are magnitude, wanda, sparsegpt"]
