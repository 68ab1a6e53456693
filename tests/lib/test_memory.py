"""Memory counted from the tensors (by hand on a tiny model), the sampler's thread and its probes (fake driver
libraries), and a real LeNet-5 run's summary and time line, also across a stop and a resume."""

from __future__ import annotations

import importlib.metadata
import logging
import math
import mmap
import sys
import threading
import time
import types
from itertools import chain, repeat
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lib import checkpoint, results
from lib.memory import AmdSmiProbe, MemorySampler, NvmlProbe, Probe, counted_bytes, device_probe, rss_bytes
from lib.pruning import PRUNERS
from lib.pruning.base import PruningSettings
from lib.pruning.movement import MovementSettings
from lib.pruning.schedule import ScheduleSettings
from lib.pruning.state import StateSettings
from lib.trainer import Interrupted, Trainer
from tests.helpers import StopAt, assert_memory_timeline, assert_same_run, computed_rows, lenet5_trainer

CPU = torch.device("cpu")
MIB = 1 << 20


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))  # 12 + 3 + 6 + 2 = 23 fp32 = 92 bytes


def _one_adamw_step(model: nn.Module, pruner) -> torch.optim.Optimizer:
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    pruner.prepare()
    pruner.attach(opt)
    model(torch.randn(5, 4)).square().mean().backward()
    pruner.before_step()
    opt.step()
    pruner.after_step()
    return opt


def test_adamw_state_is_two_moments_per_weight_and_a_step_counter_per_tensor():
    model = _tiny()
    opt = _one_adamw_step(model, PRUNERS["none"](model, PruningSettings(), 10))
    # exp_avg + exp_avg_sq = 2 x 92 bytes, plus a 0-dim fp32 'step' for each of the 4 tensors
    assert counted_bytes(model, opt, PRUNERS["none"](model, PruningSettings(), 10)) == {
        "param_bytes": 92,
        "grad_bytes": 92,
        "optimizer_state_bytes": 2 * 92 + 4 * 4,
        "mask_bytes": 0,
        "pruner_state_bytes": 0,
        "state_x_weights": 200 / 92,
    }


def test_adamwprune_adds_one_byte_per_weight_of_the_pruned_layers():
    model = _tiny()
    settings = StateSettings(target=0.5, schedule=ScheduleSettings(shape="oneshot", interval=1))
    pruner = PRUNERS["state"](model, settings, 10)
    opt = _one_adamw_step(model, pruner)
    assert int((~model[0].weight_mask).sum() + (~model[2].weight_mask).sum()) == 9  # it pruned half of 18
    counted = counted_bytes(model, opt, pruner)
    assert counted["optimizer_state_bytes"] == 200  # AdamW's state, no score tensor
    assert counted["mask_bytes"] == 12 + 6  # one bool per weight of both Linear layers, biases unmasked
    assert counted["pruner_state_bytes"] == 0  # AdamWPrune scores from the optimizer's moments: no state of its own
    assert counted["state_x_weights"] == (200 + 18) / 92


def test_movement_pruning_counts_its_scores_as_pruner_state():
    model = _tiny()
    settings = MovementSettings(target=0.5, schedule=ScheduleSettings(shape="oneshot", interval=1))
    pruner = PRUNERS["movement"](model, settings, 10)
    opt = _one_adamw_step(model, pruner)
    counted = counted_bytes(model, opt, pruner)
    assert counted["pruner_state_bytes"] == 4 * (12 + 6)  # one fp32 score per weight of both Linear layers
    assert counted["state_x_weights"] == (200 + 18 + 72) / 92


def test_views_of_one_buffer_are_counted_once():
    buffer = torch.zeros(8)
    model = nn.Linear(2, 2)
    opt = types.SimpleNamespace(state={model.weight: {"a": buffer, "b": buffer.view(2, 4)[1], "c": [buffer[:3]]}})
    pruner = types.SimpleNamespace(mask_bytes=lambda: 0, state_dict=lambda: {})
    assert counted_bytes(model, opt, pruner)["optimizer_state_bytes"] == 32
    assert counted_bytes(model, opt, pruner)["grad_bytes"] == 0  # no gradient yet


class FakeProbe(Probe):
    name = "fake"

    def __init__(self, values) -> None:
        super().__init__()
        self.values = iter(values)
        self.closed = False

    def usage(self):
        return [(self.pid, next(self.values)), (self.pid + 1, 10**9)]

    def close(self) -> None:
        self.closed = True


def _sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "memory-sampler"]


def test_the_sampler_samples_at_its_interval_and_its_thread_ends_with_stop():
    interval = 0.02
    probe = FakeProbe(chain([10, 30, 20], repeat(20)))
    sampler = MemorySampler(CPU, interval, probe=probe)
    sampler.start(step=7)
    rows = []
    deadline = time.monotonic() + 60
    while len(rows) < 6 and time.monotonic() < deadline:
        rows += sampler.drain()
        sampler.step = 9 if len(rows) >= 3 else 7
        time.sleep(interval / 4)
    sampler.stop()
    assert sampler.thread is not None and not sampler.thread.is_alive() and _sampler_threads() == []
    rows += sampler.drain()  # stop()'s last sample
    assert probe.closed
    assert [r["device_bytes"] for r in rows[:3]] == [10, 30, 20] and sampler.peaks()["peak_device_bytes"] == 30
    assert {r["split"] for r in rows} == {"memory"} and {r["step"] for r in rows[:3]} == {7}
    assert rows[-1]["step"] == 9 and all(r["allocated_bytes"] is None and r["rss_bytes"] > 0 for r in rows)
    times = [r["time_s"] for r in rows[:-1]]  # the last one is stop()'s, taken whenever stop() came
    # one sample at start, then one in each slot of `interval` it wakes in (at k * interval, on time or late: a
    # late wake-up skips the slots it missed, never samples twice in one); times are rounded to the millisecond
    slots = [math.floor((t + 0.0005) / interval) for t in times]
    assert slots[0] == 0 and all(b > a for a, b in zip(slots, slots[1:], strict=False)), times
    time.sleep(3 * interval)
    assert sampler.drain() == []  # nothing samples after stop()


def test_interval_zero_keeps_no_time_line_but_the_peaks():
    sampler = MemorySampler(CPU, 0, probe=FakeProbe([10, 40]))
    sampler.start({"seconds": 5.0, "peak_rss_bytes": 1 << 60, "peak_device_bytes": 25})
    assert sampler.thread is None
    sampler.stop()
    assert sampler.drain() == []
    peaks = sampler.peaks()
    assert peaks["peak_device_bytes"] == 40 and peaks["peak_rss_bytes"] == 1 << 60  # the run's earlier peak
    assert peaks["peak_allocated_bytes"] is None and sampler.state()["seconds"] >= 5.0


def test_rss_follows_a_touched_allocation():
    # A fresh anonymous mapping, every page written: its 64 MiB are new resident pages whatever the allocator's
    # state. (A 64 MiB torch tensor was not: malloc can carve it from free heap memory an earlier test left
    # resident, and two fresh-clone runs measured 62.5 MiB and 0 for it.)
    block = mmap.mmap(-1, 64 * MIB)
    before = rss_bytes()
    np.frombuffer(block, dtype=np.uint8)[:: mmap.PAGESIZE] = 1
    assert rss_bytes() - before >= 63 * MIB
    block.close()


def _fake_nvml(per_device: list[list[tuple[int, int | None]]], fail: bool = False) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")
    nvml.nvmlInit = lambda: None
    nvml.nvmlShutdown = lambda: None
    nvml.nvmlDeviceGetCount = lambda: len(per_device)
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i

    def processes(handle):
        if fail:
            raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in per_device[handle]]

    nvml.nvmlDeviceGetComputeRunningProcesses = processes
    return nvml


def test_nvml_sums_this_process_over_every_gpu(monkeypatch, caplog):
    me, other = Probe().pid, Probe().pid + 1
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml([[(me, 100 * MIB), (other, 999)], [], [(me, 50 * MIB)]]))
    assert NvmlProbe().read() == 150 * MIB
    for per_device, fail in (([[(other, 1)]], False), ([[(me, None)]], False), ([[(me, 1)]], True)):
        monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(per_device, fail))
        probe = NvmlProbe()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lib.memory"):
            assert probe.read() is None and probe.read() is None
        assert len(caplog.records) == 1  # logged once, never raised


def test_amdsmi_reads_vram_from_both_process_list_formats(monkeypatch):
    me = Probe().pid
    amd = types.ModuleType("amdsmi")
    amd.amdsmi_init = amd.amdsmi_shut_down = lambda: None
    amd.amdsmi_get_processor_handles = lambda: ["new", "old"]
    lists = {
        "new": [{"pid": me, "memory_usage": {"vram_mem": 300}}, {"pid": me + 1, "memory_usage": {"vram_mem": 7}}],
        "old": ["p0"],
    }
    amd.amdsmi_get_gpu_process_list = lambda h: lists[h]
    amd.amdsmi_get_gpu_process_info = lambda h, p: {"pid": me, "mem": 45}
    monkeypatch.setitem(sys.modules, "amdsmi", amd)
    assert AmdSmiProbe().read() == 345


def test_no_probe_off_cuda():
    assert device_probe(CPU) is None


# --------------------------------------------------------------------------- a real run

SETTINGS = (
    "MODEL_LENET5=y",
    "OPTIMIZER_SGD=n",
    "OPTIMIZER_ADAMW=y",
    "PRUNING_NONE=n",
    "PRUNING_MAGNITUDE=y",
    "TARGET_SPARSITIES=0.5",
    "EPOCHS=2",
    "BATCH_SIZE=32",  # 45 steps an epoch
    "LOG_INTERVAL=5",
    "CHECKPOINT_INTERVAL=10",
    "DEVICE=cpu",
    "MEMORY_SAMPLE_MS=10",
)
MEMORY_KEYS = {
    "device",
    "peak_allocated_bytes",
    "peak_reserved_bytes",
    "peak_device_bytes",
    "cuda_context_bytes",
    "peak_rss_bytes",
    "counted",
}


def _trainer(run_dir: Path) -> Trainer:
    return lenet5_trainer(run_dir, SETTINGS)


def test_a_run_records_its_memory_and_a_resumed_run_goes_on_with_it(tmp_path: Path):
    reference = _trainer(tmp_path / "reference")
    summary = reference.fit()
    model, opt = reference.model, reference.optimizer
    params = list(model.parameters())
    weights = 4 * sum(p.numel() for p in params)
    masks = sum(m.weight_mask.numel() for m in model.modules() if hasattr(m, "weight_mask"))
    memory = summary["memory"]
    assert set(memory) == MEMORY_KEYS and memory["device"] == "cpu" and memory["peak_rss_bytes"] > 0
    assert memory["peak_allocated_bytes"] is None and memory["cuda_context_bytes"] is None
    assert memory["counted"] == {
        "param_bytes": weights,
        "grad_bytes": weights,
        "optimizer_state_bytes": 2 * weights + 4 * len(params),
        "mask_bytes": masks,
        "pruner_state_bytes": 0,  # magnitude pruning keeps no state of its own
        "state_x_weights": (2 * weights + 4 * len(params) + masks) / weights,
    }
    # conv2, fc1 and fc2 (the first convolution and the head stay dense by default)
    assert len(opt.state) == len(params) and masks == 16 * 6 * 5 * 5 + 400 * 120 + 120 * 84
    assert summary["peak_memory_bytes"] > 0  # the key the report reads, kept
    # Steady throughput: after the first log row (5 steps of 32 images) of each process; 2 epochs of 1438 images
    final = checkpoint.load(tmp_path / "reference" / results.CHECKPOINT)["state"]
    assert final["samples"] == 2 * 1438 and final["steady_samples"] == 2 * 1438 - 5 * 32
    assert summary["throughput_steady"] == final["steady_samples"] / final["steady_seconds"]
    assert 0 < final["steady_seconds"] < final["train_seconds"]
    env = results.read_json(tmp_path / "reference" / results.ENV)
    assert env["packages"]["torch"] == importlib.metadata.version("torch")
    rows = results.read_jsonl(tmp_path / "reference" / results.METRICS)
    timeline = [r for r in rows if r["split"] == "memory"]
    assert len(timeline) >= 2 and timeline[0]["time_s"] < timeline[-1]["time_s"]
    assert_memory_timeline(rows)
    assert len(computed_rows(rows)) == 2 * 45 // 5 + 2  # memory rows come on top of the train and eval rows

    stopped = _trainer(tmp_path / "stopped")
    stopped.ctx.stop = StopAt(stopped, 20)
    with pytest.raises(Interrupted):
        stopped.fit()
    assert _sampler_threads() == []  # the thread ended with the interrupted run
    at_stop = checkpoint.load(tmp_path / "stopped" / results.CHECKPOINT)["state"]
    assert at_stop["step"] == 20
    _trainer(tmp_path / "stopped").fit()
    assert _sampler_threads() == []
    assert_same_run(tmp_path / "reference", tmp_path / "stopped")  # train and eval rows identical, in order
    # The resumed process's first sample follows the rows its checkpoint counted: at the step it resumed at, its
    # time going on from the seconds the run had run (to the millisecond the rows are rounded to).
    first = results.read_jsonl(tmp_path / "stopped" / results.METRICS)[at_stop["metric_rows"]]
    assert first["split"] == "memory" and first["step"] == 20
    assert first["time_s"] >= at_stop["memory"]["seconds"] - 0.0005
    # The resumed process warms up again (steps 21-25) before its steps count as steady.
    resumed = checkpoint.load(tmp_path / "stopped" / results.CHECKPOINT)["state"]
    assert at_stop["steady_samples"] == (20 - 5) * 32 and resumed["steady_samples"] == 2 * 1438 - 2 * 5 * 32
