"""GPT-2 variants under issue 17's fair ablation protocol (the MLP ratio, MLA, reciprocal attention, KV pruning,
the reciprocal MLP): one row per variant of the matrix (its ``mlp_ratio``, ``mla``, ``reciprocal``, ``kv_keep``
and ``rmlp`` axes; every other axis the same, or the rows would mix them), with the final validation loss as
mean ± std over seeds, the seeds, the parameter count, training FLOPs per token and steady tokens/s, and the
difference from the plain variant, flagged when it is smaller than the seed noise (the larger of the two standard
deviations). Only done runs enter; a matrix without these axes (or with one variant) has no such section."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from lib.results import Run
from scripts.update_graphs.numbers import mean_std
from scripts.update_graphs.tables import md_table

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report

METRIC = "loss"
PLAIN = (2.0, 0, "none", 1.0, "none")  # (mlp_ratio, mla, reciprocal, kv_keep, rmlp) of the plain GPT-2
INTRO = (
    "Every variant trained for the same tokens with the same schedule, each seed a separate run; each run's model"
    " passed the causal-leak check before training (`docs/reciprocal.md`). Loss: final validation loss, mean ± std"
    " over seeds. Δ: difference of the means from the plain variant; *within noise* when it is smaller than the"
    " larger of the two standard deviations."
)


Variant = tuple[float, int, str, float, str]


def variant(run: Run) -> Variant:
    a = run.axes
    ratio, keep = float(a.get("mlp_ratio") or 2.0), float(a.get("kv_keep") or 1.0)
    return ratio, int(a.get("mla") or 0), a.get("reciprocal") or "none", keep, a.get("rmlp") or "none"


def name(v: Variant) -> str:
    ratio, mla, ra, keep, rmlp = v
    parts = [] if ratio == 2.0 else [f"MLP 1:{ratio:g}"]
    parts += [f"MLA {mla}"] if mla else []
    parts += [] if ra == "none" else [f"RA {ra}"]
    parts += [] if keep == 1.0 else [f"KV keep {keep:g}"]
    parts += [] if rmlp == "none" else ["R-MLP"]
    return " + ".join(parts) or "plain"


def _mean(runs: list[Run], key: str) -> float | None:
    values = [r.summary[key] for r in runs if r.summary and r.summary.get(key) is not None]
    return sum(values) / len(values) if values else None


def table(groups: dict[Variant, list[Run]]) -> list[str]:
    stats = {v: mean_std([r.final(METRIC) for r in runs]) for v, runs in groups.items()}
    plain = stats.get(PLAIN)
    rows = []
    for v, runs in groups.items():
        m, sd = stats[v]
        delta = ""
        if plain is not None and v != PLAIN:
            diff, noise = m - plain[0], max(sd or 0.0, plain[1] or 0.0)
            delta = f"{diff:+.4f}" + (" *within noise*" if abs(diff) < noise or len(runs) < 2 else "")
        params, flops, speed = (_mean(runs, k) for k in ("parameters", "flops_per_token", "throughput_steady"))
        rows.append(
            [name(v), f"{m:.4f}" + (f" ± {sd:.4f}" if sd is not None else ""), len(runs),
             f"{params / 1e6:.3f}M" if params else "", f"{flops / 1e6:.2f}M" if flops else "",
             f"{speed:,.0f}" if speed else "", delta]
        )  # fmt: skip
    header = ["variant", "val loss", "seeds", "parameters", "FLOPs/token", "tokens/s", "Δ vs plain"]
    return md_table(header, rows)


def add(report: Report) -> None:
    runs = [r for r in report.matrix.runs if r.state == "done" and r.axes.get("reciprocal") is not None]
    runs = [r for r in runs if r.final(METRIC) is not None]
    groups: dict[Variant, list[Run]] = defaultdict(list)
    for run in sorted(runs, key=lambda r: (variant(r) != PLAIN, variant(r))):
        groups[variant(run)].append(run)
    if len(groups) < 2:
        return
    report.heading("GPT-2 variants")
    report.add(INTRO, "")
    report.add(*table(dict(groups)), "")
