"""The attention-output gating stages against the published setup: the October 2024 modded-nanogpt speedrun
(records/101724_DistributedMuon/train_gpt2.py) and the write-up's four stages; its schedule and learning-rate
semantics by hand; the report section from a fixture results directory."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from torch import nn

from lib import config as cfgmod
from lib.config import Config
from lib.matrix import expand
from lib.optimizers import OPTIMIZERS, set_peak_lr
from lib.optimizers.muon import adjusted_lr
from lib.optimizers.schedules import LR_SCHEDULES, LRSchedule
from lib.results import CONFIG, STATUS, SUMMARY
from scripts.update_graphs.report import update_graphs
from scripts.update_graphs.sections import attn_gating

LRS = (0.0036, 0.00396, 0.00432, 0.00468)


def _load(name: str) -> tuple[Config, list[dict]]:
    cfg = cfgmod.load(cfgmod.DEFCONFIGS / name)
    return cfg, [r.axes for r in expand(cfg).runs]


def _cells(plan: list[dict], *keys: str) -> list[tuple]:
    return sorted((tuple(a[k] for k in keys) for a in plan), key=repr)


@pytest.mark.parametrize(
    "name",
    [
        "gpt2-attn-gating-stage1",
        "gpt2-attn-gating-stage2",
        "gpt2-attn-gating-stage2_5",
        "gpt2-attn-gating-stage3",
        "gpt2-attn-gating-stage3-baseline",
    ],
)
def test_every_stage_is_the_speedrun_setup(name: str) -> None:
    cfg, _ = _load(name)
    # 124M-class GPT-2 as the speedrun builds it: 12 layers, 6 heads of 128, C 768, T 1024, no biases
    assert (cfg["GPT2_SIZE"], cfg["GPT2_N_LAYER"], cfg["GPT2_N_HEAD"], cfg["GPT2_N_EMBD"]) == ("custom", 12, 6, 768)
    assert cfg["GPT2_BLOCK_SIZE"] == 1024 and not cfg["GPT2_BIAS"]
    assert (cfg["GPT2_DATASET"], cfg["GPT2_TOKENIZER"]) == ("fineweb10b", "gpt2")
    # batch 8 x 64 sequences of 1024 tokens a step
    assert cfg["BATCH_SIZE"] * cfg["GPT2_GRAD_ACCUM"] == 512 and cfg["BATCH_SIZE"] == 64
    # enough 100M-token shards that a run never repeats a window on average
    tokens = cfg["GPT2_MAX_ITERS"] * 512 * 1024
    assert cfg["GPT2_DATA_FILES"] == math.ceil(tokens / 100e6)
    # AdamW (0.9, 0.95), no decay, on the tied embedding/head at LR; Muon (momentum 0.95, Nesterov, 5 NS steps)
    # on the hidden matrices at 0.1 x LR with the speedrun's sqrt(max(A, B)) update scale
    assert OPTIMIZERS.selected(cfg) == ["muon"]
    assert (cfg["ADAMW_LR"], cfg["ADAM_BETA1"], cfg["ADAM_BETA2"], cfg["ADAMW_WEIGHT_DECAY"]) == (0.0036, 0.9, 0.95, 0)
    assert (cfg["MUON_MOMENTUM"], cfg["MUON_NESTEROV"], cfg["MUON_NS_STEPS"], cfg["MUON_WEIGHT_DECAY"]) == (
        0.95,
        True,
        5,
        0,
    )
    assert cfg["MUON_LR_AXIS"] == "adamw" and cfg["MUON_LR_SCALE"] == "match_rms_adamw"
    assert adjusted_lr(cfg["MUON_LR"], cfg["MUON_LR_SCALE"], 3072, 768) == pytest.approx(
        0.1 * cfg["ADAMW_LR"] * math.sqrt(3072)
    )
    assert cfg["GRAD_CLIP_NORM"] == 0
    # no warm-up, constant, linear warm-down over the last LR_WARMDOWN_ITERS iterations
    assert cfg["LR_SCHEDULE"] == "warmdown" and cfg["LR_WARMUP_STEPS"] == 0
    assert cfg["PRECISION"] == "bf16" and cfg["COMPILE"]
    assert cfg["GPT2_EVAL_INTERVAL"] == 125 and cfg["GPT2_EVAL_BATCHES"] * cfg["BATCH_SIZE"] * 1024 == 10485760


def test_stage1_is_five_gates_at_0_0036_over_two_seeds() -> None:
    cfg, plan = _load("gpt2-attn-gating-stage1")
    assert cfg["GPT2_MAX_ITERS"] == 1500 and cfg["ADAMW_LR"] == 0.0036 and not cfg["LEARNING_RATES"]
    assert cfg["LR_WARMDOWN_ITERS"] == round(1500 * 1450 / 5100)
    gates = {("none", None, None), ("headwise", "sdpa", "sigmoid"), ("headwise", "sdpa", "ns_sigmoid")}
    gates |= {("elementwise", "sdpa", "sigmoid"), ("const", "sdpa", "sigmoid")}
    cells = _cells(plan, "attn_gate", "attn_gate_pos", "attn_gate_act", "lr", "seed")
    assert cells == sorted(((*g, None, s) for g in gates for s in (0, 1)), key=repr)


def test_stage2_is_four_learning_rates_by_two_gates_over_two_seeds() -> None:
    cfg, plan = _load("gpt2-attn-gating-stage2")
    assert cfg["GPT2_MAX_ITERS"] == 800 and cfg["LR_WARMDOWN_ITERS"] == round(800 * 1450 / 5100)
    cells = _cells(plan, "attn_gate", "attn_gate_act", "lr", "seed")
    gates = (("none", None), ("elementwise", "sigmoid"))
    assert cells == sorted(((*g, lr, s) for g in gates for lr in LRS for s in (0, 1)), key=repr)


def test_stage2_5_is_1500_iterations_at_0_00468() -> None:
    cfg, plan = _load("gpt2-attn-gating-stage2_5")
    assert cfg["GPT2_MAX_ITERS"] == 1500 and cfg["LR_WARMDOWN_ITERS"] == round(1500 * 1450 / 5100)
    cells = _cells(plan, "attn_gate", "attn_gate_act", "lr", "seed")
    assert cells == sorted(
        ((g, a, 0.00468, s) for g, a in (("none", None), ("elementwise", "sigmoid")) for s in (0, 1)), key=repr
    )


def test_stage3_is_three_seeds_at_0_00468_plus_one_baseline_seed_at_0_0036() -> None:
    cfg, plan = _load("gpt2-attn-gating-stage3")
    assert (cfg["GPT2_MAX_ITERS"], cfg["LR_WARMDOWN_ITERS"]) == (5100, 1450)
    cells = _cells(plan, "attn_gate", "attn_gate_act", "lr", "seed")
    gates = (("none", None), ("elementwise", "sigmoid"))
    assert cells == sorted(((g, a, 0.00468, s) for g, a in gates for s in (0, 1, 2)), key=repr)
    base, plan = _load("gpt2-attn-gating-stage3-baseline")
    assert (base["GPT2_MAX_ITERS"], base["LR_WARMDOWN_ITERS"], base["ADAMW_LR"]) == (5100, 1450, 0.0036)
    assert _cells(plan, "attn_gate", "lr", "seed") == [("none", None, 0)]


def _lrs(total: int, warmdown: int, warmup: int = 0) -> list[float]:
    cfg = Config({"LR_SCHEDULE": "warmdown", "LR_WARMUP_STEPS": warmup, "LR_WARMDOWN_ITERS": warmdown})
    sched = LRSchedule(torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=2.0), total_steps=total, cfg=cfg)
    out = [sched.get_last_lr()]
    for _ in range(total - 1):
        sched.step()
        out.append(sched.get_last_lr())
    return out


def test_warmdown_by_hand() -> None:
    # the speedrun's get_lr(it) for it < total: 1 until total - warmdown, then (total - it) / warmdown
    assert _lrs(10, 4) == pytest.approx([2.0] * 7 + [1.5, 1.0, 0.5])
    assert _lrs(6, 4, warmup=2) == pytest.approx([1.0, 2.0, 2.0, 1.5, 1.0, 0.5])
    factor = LR_SCHEDULES["warmdown"]
    cfg = Config({"LR_WARMUP_STEPS": 0, "LR_WARMDOWN_ITERS": 1450})
    assert [factor(s, 5100, cfg) for s in (0, 3649, 3650, 4375, 5099)] == pytest.approx([1.0, 1.0, 1.0, 0.5, 1 / 1450])
    assert factor(0, 800, cfg) == pytest.approx(800 / 1450)  # a warm-down longer than the run starts below the peak


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(16, 8)
        self.fc = nn.Linear(8, 8, bias=False)
        self.head = nn.Linear(8, 16, bias=False)
        self.head.weight = self.wte.weight


def test_lr_axis_is_the_adamw_rate_with_muon_at_a_tenth_of_its_step() -> None:
    cfg, _ = _load("gpt2-attn-gating-stage2")
    opt = OPTIMIZERS["muon"](_Tiny(), cfg).optimizer
    set_peak_lr(opt, 0.00468)
    lrs = {g["optimizer"]: g["lr"] for g in opt.param_groups if g["params"]}
    assert lrs["adamw"] == 0.00468  # the embedding / head, exactly the axis value
    assert lrs["muon"] == pytest.approx(0.00234)
    step = adjusted_lr(lrs["muon"], "match_rms_adamw", 768, 768)  # what Muon applies to a 768 x 768 matrix
    assert step == pytest.approx(0.1 * 0.00468 * math.sqrt(768))  # the speedrun's 0.1 x LR x sqrt(max(A, B))


def _write_run(matrix_dir, name: str, axes: dict, loss: float | None, seconds: float, values: dict) -> None:
    run_id = "-".join(f"{k}{v}" for k, v in axes.items())
    run = matrix_dir / run_id
    run.mkdir(parents=True)
    (run / CONFIG).write_text(json.dumps({"run_id": run_id, "matrix": name, "axes": axes, "values": values}))
    state = "done" if loss is not None else "failed"
    (run / STATUS).write_text(json.dumps({"state": state, "step": 10, "total_steps": 10}))
    summary = {"run_id": run_id, "axes": axes, "status": state, "metric": "loss", "metric_mode": "min"}
    summary |= {"final": None if loss is None else {"loss": loss, "perplexity": math.exp(loss)}}
    summary |= {"train_seconds": seconds, "steps": 10, "reason": None if loss else "loss became NaN"}
    (run / SUMMARY).write_text(json.dumps(summary))


def _axes(gate: str, act: str | None, seed: int, lr: float | None = None) -> dict:
    axes = {"model": "gpt2", "attn_gate": gate, "attn_gate_pos": "sdpa" if act else None, "attn_gate_act": act}
    return {**axes, "optimizer": "muon", "pruning": "none", "target_sparsity": 0.0, "lr": lr, "seed": seed}


VALUES = {"MUON_LR_AXIS": "adamw", "ADAMW_LR": 0.0036, "MUON_LR": 0.0018, "MATRIX_DESCRIPTION": "stage"}


def test_stage1_report_reads_the_numbers_back(tmp_path) -> None:
    name = "gpt2-attn-gating-stage1"
    _write_run(tmp_path, name, _axes("none", None, 0), 3.5, 100.0, VALUES)
    _write_run(tmp_path, name, _axes("none", None, 1), 3.6, 120.0, VALUES)
    _write_run(tmp_path, name, _axes("headwise", "ns_sigmoid", 0), 3.25, 90.0, VALUES)
    _write_run(tmp_path, name, _axes("headwise", "ns_sigmoid", 1), None, 5.0, VALUES)  # failed: not averaged
    report = update_graphs(tmp_path).read_text()
    assert "## Attention-output gating, stage 1: 1500 iterations at LR 0.0036" in report
    assert "| attn_gate | gate_act | seeds | final_loss | published | train_time (s) |" in report
    assert "| none | — | 2 of 2 | 3.5500 | 3.5334 | 110.0 |" in report
    assert "| headwise | ns_sigmoid | 1 of 2 | 3.2500 | 3.5272 | 90.0 |" in report
    assert "| const | sigmoid | 0 of 0 | — | 3.5383 | — |" in report  # published, not run yet
    rows = {(r["attn_gate"], r["gate_act"]): r for r in csv.DictReader((tmp_path / attn_gating.CSV_NAME).open())}
    assert rows[("none", "")]["final_loss"] == "3.55" and rows[("none", "")]["seeds"] == "0 1"
    assert rows[("none", "")]["learning_rate"] == "0.0036" and rows[("none", "")]["published_final_loss"] == "3.5334"
    assert rows[("headwise", "ns_sigmoid")]["train_seconds"] == "90.0"
    assert len(rows) == 5


def test_stage2_report_rows_are_learning_rates(tmp_path) -> None:
    name = "gpt2-attn-gating-stage2_5"
    _write_run(tmp_path, name, _axes("elementwise", "sigmoid", 0, 0.00468), 3.5, 60.0, VALUES)
    _write_run(tmp_path, name, _axes("none", None, 0, 0.00468), 3.52, 50.0, VALUES)
    report = update_graphs(tmp_path).read_text()
    assert "| attn_gate | learning_rate | seeds | final_loss | published | train_time (s) |" in report
    assert "| elementwise | 0.00468 | 1 of 1 | 3.5000 | 3.5099 | 60.0 |" in report
    assert "| none | 0.00468 | 1 of 1 | 3.5200 | 3.5298 | 50.0 |" in report


def test_other_matrices_get_no_gating_section(tmp_path) -> None:
    _write_run(tmp_path, "gpt2-quick", _axes("none", None, 0), 2.0, 1.0, VALUES)
    assert "Attention-output gating" not in update_graphs(tmp_path).read_text()
    assert not (tmp_path / attn_gating.CSV_NAME).exists()
