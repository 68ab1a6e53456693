"""Attention-output gating, the published four stages (``gpt2-attn-gating-stage*`` defconfigs): per gate and
gate activation (stage 1) or learning rate (stages 2-3), the seeds that finished, the final eval loss (mean over
them), the published final loss beside it and the training time; the same rows in ``attn-gating.csv`` in the
matrix directory (``results.csv`` beside it has one row per run).

The learning rate is the speedrun's ``learning_rate``: the lr axis value, else the AdamW embedding / head rate
(``ADAMW_LR``) when the lr axis sets it (``MUON_LR_AXIS_ADAMW``), else ``MUON_LR``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lib.published import GATING_FINAL_LOSS
from lib.results import Run, atomic_write_text
from scripts.update_graphs.numbers import MISSING, mean
from scripts.update_graphs.tables import md_table

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report

CSV_NAME = "attn-gating.csv"
METRIC = "loss"


@dataclass(frozen=True)
class Stage:
    title: str
    by_lr: bool  # rows differ by learning rate (else by gate activation)
    published: dict[tuple, float]  # (attn_gate, gate_act or learning rate) -> published final loss


# The published final losses live with every other published table in lib.published (GATING_FINAL_LOSS).
_TITLES = {
    "gpt2-attn-gating-stage1": ("stage 1: 1500 iterations at LR 0.0036", False),
    "gpt2-attn-gating-stage2": ("stage 2: 800 iterations, four learning rates", True),
    "gpt2-attn-gating-stage2_5": ("stage 2.5: 1500 iterations at LR 0.00468", True),
    "gpt2-attn-gating-stage3": ("stage 3: 5100 iterations at LR 0.00468", True),
    "gpt2-attn-gating-stage3-baseline": ("stage 3 baseline: 5100 iterations at LR 0.0036", True),
}
STAGES: dict[str, Stage] = {
    name: Stage(title, by_lr, dict(GATING_FINAL_LOSS[name])) for name, (title, by_lr) in _TITLES.items()
}


def learning_rate(run: Run) -> float | None:
    """The speedrun's ``learning_rate`` of ``run`` (see the module docstring)."""
    if run.axes.get("lr") is not None:
        return float(run.axes["lr"])
    values = run.values
    key = "ADAMW_LR" if values.get("MUON_LR_AXIS") == "adamw" else "MUON_LR"
    return None if values.get(key) is None else float(values[key])


def _key(run: Run, stage: Stage) -> tuple:
    gate = run.axes.get("attn_gate") or "none"
    return (gate, learning_rate(run)) if stage.by_lr else (gate, run.axes.get("attn_gate_act"))


def rows(runs: Sequence[Run], stage: Stage) -> list[dict]:
    """One row per (gate, activation or learning rate), published cells first in the write-up's order, then
    any other cell of the matrix; numbers over the done runs that record a final loss."""
    groups: dict[tuple, list[Run]] = {key: [] for key in stage.published}
    for run in runs:
        groups.setdefault(_key(run, stage), []).append(run)
    out = []
    for (gate, second), members in groups.items():
        done = [r for r in members if r.state == "done" and r.final(METRIC) is not None]
        out.append(
            {
                "attn_gate": gate,
                "gate_act": None if stage.by_lr else second,
                "learning_rate": second if stage.by_lr else (learning_rate(members[0]) if members else None),
                "seeds": sorted(r.axes.get("seed") for r in done),
                "runs": len(members),
                "final_loss": mean([r.final(METRIC) for r in done]),
                "published_final_loss": stage.published.get((gate, second)),
                "train_seconds": mean([r.summary["train_seconds"] for r in done if r.summary.get("train_seconds")]),
            }
        )
    return out


def _num(value: float | None, spec: str) -> str:
    return MISSING if value is None else format(value, spec)


def table(stage_rows: Sequence[dict], stage: Stage) -> list[str]:
    second = "learning_rate" if stage.by_lr else "gate_act"
    header = ["attn_gate", second, "seeds", "final_loss", "published", "train_time (s)"]
    body = [
        [
            r["attn_gate"],
            (_num(r["learning_rate"], "g") if stage.by_lr else r["gate_act"] or MISSING),
            f"{len(r['seeds'])} of {r['runs']}",
            _num(r["final_loss"], ".4f"),
            _num(r["published_final_loss"], ".4f"),
            _num(r["train_seconds"], ".1f"),
        ]
        for r in stage_rows
    ]
    return md_table(header, body)


def csv_text(name: str, stage_rows: Sequence[dict]) -> str:
    out = io.StringIO()
    fields = ["stage", "attn_gate", "gate_act", "learning_rate", "seeds", "runs", "final_loss"]
    fields += ["published_final_loss", "train_seconds"]
    writer = csv.DictWriter(out, fields, lineterminator="\n")
    writer.writeheader()
    for r in stage_rows:
        cells = {k: "" if v is None else v for k, v in r.items()}
        writer.writerow({**cells, "stage": name, "seeds": " ".join(str(s) for s in r["seeds"])})
    return out.getvalue()


def add(report: Report) -> None:
    name = report.matrix.name
    stage = STAGES.get(name)
    if stage is None:
        return
    stage_rows = rows(report.matrix.runs, stage)
    report.heading(f"Attention-output gating, {stage.title}")
    report.add(
        "Final eval loss, mean over the done seeds; published: the write-up's final loss for the cell"
        f" ({MISSING} where it gives none). Per-stage rows: `{CSV_NAME}`; one row per run: `results.csv`.",
        "",
    )
    report.add(*table(stage_rows, stage), "")
    atomic_write_text(report.matrix.path / CSV_NAME, csv_text(name, stage_rows))
