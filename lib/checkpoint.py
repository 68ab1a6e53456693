"""Checkpoints: written atomically with the previous one kept, read without ever running code from the file.

Safety. A checkpoint is a pickle, and a pickle can name any Python callable to run while it loads; a
``checkpoint.pt`` planted in a run directory would run a shell command on ``make continue`` or ``make sample``.
So every checkpoint is read with ``torch.load(weights_only=True)``, which accepts tensors and plain values
(dicts, lists, tuples, numbers, strings, None) only, and everything this framework writes is made of those:
RNG states included (:func:`rng_state`). A file that asks for anything else is refused with one line.

Damage. Writes are atomic, so a killed process never leaves half a checkpoint; a file damaged afterwards
(a full disk during a copy, a truncated transfer) can still be met. Each new checkpoint therefore keeps the
one before it as ``checkpoint.prev.pt`` (a hard link, so no extra write), and resume falls back to it: the
metrics are cut back to what that checkpoint had seen and the lost steps are replayed, so the result is the
same as if nothing had happened.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lib import results
from lib.errors import UserError
from lib.monitor import environment

logger = logging.getLogger(__name__)


class UnreadableCheckpoint(Exception):
    """A checkpoint file that is damaged (truncated, not a checkpoint at all)."""


def previous(path: Path) -> Path:
    """Where the checkpoint before ``path`` is kept: ``checkpoint.pt`` -> ``checkpoint.prev.pt``."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save(obj: Any, path: Path, keep_previous: bool = False) -> None:
    """Write ``obj`` to ``path`` atomically; with ``keep_previous`` the file it replaces becomes
    :func:`previous` (``path`` itself is never missing or partial at any instant)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    if keep_previous and path.exists():
        prev = previous(path)
        tmp = prev.with_name(f".{prev.name}.{os.getpid()}.tmp")
        try:
            os.link(path, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(path, tmp)
        os.replace(tmp, prev)
    results.atomic_write_bytes(path, buf.getvalue())


def load(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``.

    Raises :class:`UserError` for a file that asks to run code (refused, never run) and
    :class:`UnreadableCheckpoint` for a damaged one.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = re.search(r"GLOBAL (\S+)|call reduce for (\S+)", str(e))
        if unsafe:
            name = unsafe.group(1) or unsafe.group(2)
            raise UserError(
                f"{path} asks to run {name} when loaded; refused: checkpoints of this framework hold only "
                f"tensors and plain values, so this file was not written by it or was tampered with; "
                f"delete it (`rm {path}`) unless you trust where it came from"
            ) from None
        raise UnreadableCheckpoint(f"{path} is damaged ({_first_line(e)})") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        raise UnreadableCheckpoint(f"{path} is damaged ({_first_line(e)})") from None


def _first_line(e: Exception) -> str:
    lines = [line for line in str(e).splitlines() if line.strip() and "Weights only load failed" not in line]
    return (lines[0] if lines else type(e).__name__).strip().rstrip(".")


def exists(path: Path) -> bool:
    """Whether a run has something to resume from: ``path`` or the checkpoint kept before it."""
    return path.exists() or previous(path).exists()


def load_for_resume(path: Path, map_location: str | torch.device = "cpu") -> dict | None:
    """The newest readable checkpoint of ``path`` and :func:`previous` (None when neither exists).

    A damaged newest one is passed over with a warning; when none is readable, one :class:`UserError` names
    the files and the command that discards them (the run then starts again from step 0).
    """
    candidates = [p for p in (path, previous(path)) if p.exists()]
    problems = []
    for candidate in candidates:
        try:
            ckpt = load(candidate, map_location)
        except UnreadableCheckpoint as e:
            problems.append(str(e))
            continue
        if problems:
            logger.warning("%s; resuming from %s instead", problems[0], candidate)
        return ckpt
    if not candidates:
        return None
    names = " ".join(str(p) for p in candidates)
    raise UserError(
        f"{'; '.join(problems)}; no readable checkpoint is left to resume from: `rm {names}` and "
        "`make continue` trains the run again from step 0"
    )


def rng_state() -> dict:
    """Every RNG's state as tensors and plain values (so :func:`load` accepts it)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    keys = npy["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state((npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# A training run's checkpoint: what a resumed run needs to continue bit-identically.


def save_training(path: Path, *, model, optimizer, schedule, pruner, state: dict, threads: int, run_id: str) -> None:
    """The run's checkpoint: model (with its masks), optimizer, LR schedule, pruner, every RNG, the loop's
    state (plain values: ``dataclasses.asdict`` of it), the thread count and the run id; the previous one kept."""
    save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "pruner": pruner.state_dict(),
            "rng": rng_state(),
            "state": state,
            "threads": threads,
            "run_id": run_id,
        },
        path,
        keep_previous=True,
    )


def resume_training(
    run_dir: Path, device: torch.device, *, model, optimizer, schedule, pruner, main: bool = True
) -> dict | None:
    """Restore a run from its newest readable checkpoint; returns the loop's saved state (None: nothing to
    resume, the run starts at step 0).

    The main process (rank 0 under DDP) also cuts ``metrics.jsonl`` back to the rows the checkpoint had seen
    (the steps after it are replayed and log them again) and appends a record of the resume to ``env.json``,
    with the last step the file had before the cut (``logged_step``: the trackers already have the steps up to
    it, see :mod:`lib.tracking`)."""
    ckpt = load_for_resume(run_dir / results.CHECKPOINT, map_location=device)
    if ckpt is None:
        return None
    model.load_state_dict(ckpt["model"], strict=True)
    optimizer.load_state_dict(ckpt["optimizer"])
    schedule.load_state_dict(ckpt["schedule"])
    pruner.load_state_dict(ckpt["pruner"])
    set_rng_state(ckpt["rng"])
    state = ckpt["state"]
    if main:
        metrics = run_dir / results.METRICS
        rows = results.read_jsonl(metrics)
        results.write_jsonl(metrics, rows[: state["metric_rows"]])
        logged_step = max((row.get("step", 0) for row in rows), default=0)
        record_resume(run_dir / results.ENV, state["step"], device, logged_step)
    return state


def record_resume(env_path: Path, step: int, device: torch.device, logged_step: int = 0) -> None:
    """Append to ``env.json``'s ``resumed`` list: the step, the last step logged before the interruption, the
    time and what the run continued on."""
    env = results.read_json(env_path, {})
    record = {"at_step": step, "logged_step": logged_step, "time": time.time()}
    now = environment(device)
    record.update({k: now[k] for k in ("git_sha", "git_dirty", "torch", "device", "gpu", "torch_threads")})
    env.setdefault("resumed", []).append(record)
    results.atomic_write_json(env_path, env)
