"""Checkpoints: never run code from a file, keep the previous one, fall back to it when the newest is damaged."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lib import checkpoint
from lib.errors import UserError
from tests.helpers import Planted


def test_a_checkpoint_that_asks_to_run_code_is_refused(tmp_path: Path) -> None:
    marker, path = tmp_path / "ran", tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "rng": Planted(marker)}, path)
    with pytest.raises(UserError) as error:
        checkpoint.load(path)
    assert not marker.exists()
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{path} asks to run posix.system when loaded; refused")
    assert f"`rm {path}`" in message


def test_a_planted_checkpoint_is_not_passed_over_for_the_previous_one(tmp_path: Path) -> None:
    """Falling back would hide the attack: resume refuses instead."""
    path = tmp_path / "checkpoint.pt"
    checkpoint.save({"step": 1}, path)
    checkpoint.save({"step": 2}, path, keep_previous=True)
    torch.save({"rng": Planted(tmp_path / "ran")}, path)
    with pytest.raises(UserError, match="asks to run posix.system"):
        checkpoint.load_for_resume(path)
    assert not (tmp_path / "ran").exists()


def test_each_save_keeps_the_one_before(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    checkpoint.save({"step": torch.tensor(1)}, path, keep_previous=True)
    assert not checkpoint.previous(path).exists()
    checkpoint.save({"step": torch.tensor(2)}, path, keep_previous=True)
    checkpoint.save({"step": torch.tensor(3)}, path, keep_previous=True)
    assert checkpoint.load(path)["step"] == 3
    assert checkpoint.load(checkpoint.previous(path))["step"] == 2
    assert checkpoint.previous(path).name == "checkpoint.prev.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]  # no temp left


def test_a_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, caplog) -> None:
    path = tmp_path / "checkpoint.pt"
    checkpoint.save({"step": torch.tensor(10)}, path, keep_previous=True)
    checkpoint.save({"step": torch.tensor(20), "weights": torch.randn(1000)}, path, keep_previous=True)
    path.write_bytes(path.read_bytes()[:3000])
    with caplog.at_level(logging.WARNING):
        ckpt = checkpoint.load_for_resume(path)
    assert ckpt["step"] == 10
    assert f"{path} is damaged" in caplog.text and f"resuming from {checkpoint.previous(path)}" in caplog.text


def test_no_readable_checkpoint_names_the_files_and_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    checkpoint.save({"step": torch.tensor(10)}, path, keep_previous=True)
    checkpoint.save({"step": torch.tensor(20)}, path, keep_previous=True)
    path.write_bytes(b"")
    checkpoint.previous(path).write_bytes(b"not a checkpoint")
    with pytest.raises(UserError) as error:
        checkpoint.load_for_resume(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{path} is damaged (")
    assert message.endswith(
        f"`rm {path} {checkpoint.previous(path)}` and `make continue` trains the run again from step 0"
    )
    # The advice works: with both removed there is nothing to resume, and the run starts afresh.
    path.unlink()
    checkpoint.previous(path).unlink()
    assert checkpoint.load_for_resume(path) is None


def test_no_checkpoint_at_all(tmp_path: Path) -> None:
    assert checkpoint.load_for_resume(tmp_path / "checkpoint.pt") is None
    assert not checkpoint.exists(tmp_path / "checkpoint.pt")


def test_rng_states_survive_a_safe_round_trip(tmp_path: Path) -> None:
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    np.random.standard_normal()  # a cached Gaussian in NumPy's state
    random.gauss(0, 1)  # and in Python's
    path = tmp_path / "rng.pt"
    checkpoint.save({"rng": checkpoint.rng_state()}, path)
    expected = (random.random(), random.gauss(0, 1), np.random.random(3).tolist(), torch.rand(3).tolist())
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    checkpoint.set_rng_state(checkpoint.load(path)["rng"])
    assert (random.random(), random.gauss(0, 1), np.random.random(3).tolist(), torch.rand(3).tolist()) == expected
