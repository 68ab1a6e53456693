"""Shared test helpers: write real .config files, run the real runner and make, read run directories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from lib import checkpoint, results
from lib import config as cfgmod

ROOT = cfgmod.ROOT
# Subprocess timeouts in the tests guard against a hang only: sized for a machine loaded by other jobs, they
# never decide an outcome (a test that needs an order of events waits for the event, not for a time).
HANG_GUARD_SECONDS = 1800


def write_config(path: Path, results_dir: Path, *overrides: str, defconfig: str = "quickstart") -> Path:
    """A real .config: ``defconfigs/<defconfig>`` + overrides, results under ``results_dir``."""
    kconf = cfgmod.load_kconfig()
    cfgmod.load_file(kconf, cfgmod.DEFCONFIGS / defconfig)
    cfgmod.apply_overrides(kconf, [f"RESULTS_DIR={results_dir}", *overrides])
    cfgmod.validate(cfgmod.to_config(kconf))
    kconf.write_config(str(path), save_old=False)
    return path


def runner(*args: str, timeout: float = HANG_GUARD_SECONDS, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lib.runner", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kw
    )


def make_cmd(*args: str) -> list[str]:
    return ["make", "--no-print-directory", "-C", str(ROOT), *args]


def processes_mentioning(path: Path) -> list[int]:
    """Pids of the processes whose command line names ``path`` (Linux /proc): a run's training process, or an
    orphan that should not exist."""
    needle = str(path).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def make_env() -> dict:
    """make uses the virtualenv the tests run in, whatever it is called, and runs as a user's top-level make:
    a parent `make test` passes its variables and its level down through MAKEFLAGS and MAKELEVEL, which would
    change both what the make under test does and how it words its messages (`make[1]:`)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    env["VIRTUAL_ENV"] = str(Path(sys.executable).parent.parent)
    return env


def make_run(*args: str) -> subprocess.CompletedProcess:
    """`make ARGS` to its end, output captured."""
    return subprocess.run(make_cmd(*args), env=make_env(), capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)


def assert_same_run(reference: Path, run: Path) -> None:
    """``run`` ended exactly as ``reference``: weights and masks, optimizer state, every metric row once, and the
    summary's final result and sparsity (bit for bit: how a resumed run must end on the CPU)."""
    a, b = checkpoint.load(reference / results.CHECKPOINT), checkpoint.load(run / results.CHECKPOINT)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), f"{run.name}: {key} differs"
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"{run.name}: optimizer {key} differs"
    # Same metric rows, each exactly once: no step lost, none logged twice. Memory rows measure the machine, not
    # the computation (their count follows the wall clock, their RSS and times differ from run to run): they are
    # compared for their order instead, and a resumed run's time line must go on where its checkpoint left it.
    rows, ref_rows = results.read_jsonl(run / results.METRICS), results.read_jsonl(reference / results.METRICS)
    assert computed_rows(rows) == computed_rows(ref_rows)
    assert_memory_timeline(rows)
    summary, ref_summary = results.read_json(run / results.SUMMARY), results.read_json(reference / results.SUMMARY)
    assert summary["final"] == ref_summary["final"] and summary["sparsity"] == ref_summary["sparsity"]


def computed_rows(rows: list[dict]) -> list[dict]:
    """The metric rows a run computes (train, eval), without the memory time line (split "memory")."""
    return [r for r in rows if r["split"] != "memory"]


def assert_memory_timeline(rows: list[dict]) -> None:
    """Memory rows in time order, each stamped with a step between those of the computed rows around it."""
    times = [r["time_s"] for r in rows if r["split"] == "memory"]
    assert times == sorted(times), "memory rows go back in time"
    low = 0
    for i, row in enumerate(rows):
        if row["split"] != "memory":
            low = row["step"]
            continue
        high = next((r["step"] for r in rows[i + 1 :] if r["split"] != "memory"), row["step"])
        assert low <= row["step"] <= high, f"memory row {i} at step {row['step']} outside [{low}, {high}]"


class Planted:
    """What a hostile checkpoint holds: unpickling it (``weights_only=False``) would ``touch marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def lenet5_trainer(run_dir: Path, settings: tuple[str, ...]):
    """The trainer of a LeNet-5 run directory (``settings``: Kconfig overrides), opened the way the entrypoint
    opens it: a new one starts the run, one over an existing directory resumes its checkpoint."""
    from lib.matrix import expand
    from lib.trainer import Trainer
    from lib.training import RunContext, Speed
    from models.lenet5.train import build

    if not run_dir.exists():
        cfg = cfgmod.from_defaults([*settings, f"RESULTS_DIR={run_dir.parent}"])
        run_dir.mkdir(parents=True)
        results.atomic_write_json(run_dir / results.CONFIG, expand(cfg).runs[0].to_json())
    ctx = RunContext.open(run_dir, 1)
    model, task = build(ctx)
    return Trainer(ctx, model, task, Speed.from_config(ctx.cfg))


def gpt2_run(parent: Path, *overrides: str, layers: int = 1, edit=None) -> Path:
    """A run directory of a tiny GPT-2 (C = 32, T = 32, ``layers`` blocks, byte tokenizer; ``overrides``: more
    Kconfig settings) as training leaves one: its ``config.json`` and a ``best.pt`` of seeded weights, after
    ``edit(state)`` (e.g. masks a pruner would have added)."""
    from lib.matrix import expand
    from models.gpt2.model import GPT2
    from models.gpt2.train import model_config

    settings = ["MODEL_LENET5=n", "MODEL_GPT2=y", "PRUNING_MAGNITUDE=n", "OPTIMIZER_SGD=n", "GPT2_SIZE=custom"]
    settings += [f"GPT2_N_LAYER={layers}", "GPT2_N_EMBD=32", "GPT2_N_HEAD=2", "GPT2_BLOCK_SIZE=32", *overrides]
    spec = expand(cfgmod.from_defaults(settings)).runs[0]
    run = parent / spec.run_id
    run.mkdir(parents=True)
    results.atomic_write_json(run / results.CONFIG, spec.to_json())
    torch.manual_seed(3)
    state = GPT2(model_config(spec.cfg, spec.axes, 257)).state_dict()
    if edit is not None:
        edit(state)
    torch.save({"model": state}, run / results.BEST_CHECKPOINT)
    return run


class StopAt:
    """A stop request (as a signal would make one) that arrives once ``trainer`` has taken ``step`` steps."""

    name = "SIGTERM"

    def __init__(self, trainer, step: int) -> None:
        self.trainer, self.step = trainer, step

    @property
    def requested(self) -> bool:
        return self.trainer.state.step >= self.step
