"""The loop's state goes into checkpoints as plain values and comes back equal."""

from __future__ import annotations

import dataclasses

import torch

from lib import checkpoint
from lib.ranks import Ranks
from lib.trainer import TrainState


def test_train_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    state = TrainState(
        step=7,
        epoch=1,
        batch=2,
        best={"accuracy": 0.5, "loss": 1.25, "step": 5},
        train_seconds=1.5,
        samples=224,
        metric_rows=3,
        peak_memory_bytes=1 << 20,
        last_eval={"accuracy": 0.5, "loss": 1.25},
        loss_sum=2.75,
        loss_count=2,
    )
    checkpoint.save({"state": dataclasses.asdict(state)}, tmp_path / "c.pt")
    assert TrainState.from_dict(checkpoint.load(tmp_path / "c.pt")["state"]) == state


def test_one_process_agrees_with_itself_without_collectives():
    ranks = Ranks()
    value = torch.tensor(2.5, dtype=torch.float64)
    assert ranks.main and ranks.mean(value) is value
    assert ranks.any(torch.tensor(True)) is True and ranks.any(False) is False
    assert ranks.share([1, 2, 3]) == [1, 2, 3]
    assert ranks.own_part(2.5) == 2.5
    ranks.barrier()


def test_rank_zero_carries_a_saved_mean_on():
    assert Ranks(rank=0, world=2).own_part(1.5) == 3.0
    assert Ranks(rank=1, world=2).own_part(1.5) == 0.0
    assert Ranks(rank=1, world=2).share([0, 1, 2, 3]) == [1, 3]
