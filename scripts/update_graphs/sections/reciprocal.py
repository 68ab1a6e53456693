"""GPT-2 variants under issue 17's fair ablation protocol (the MLP ratio, MLA, reciprocal attention, KV pruning,
the reciprocal MLP): one row per variant of the matrix (its ``mlp_ratio``, ``mla``, ``reciprocal``, ``kv_keep``
and ``rmlp`` axes; every other axis the same, or the rows would mix them), with the final validation loss as
mean ± std over seeds, the seeds, the parameter count, training FLOPs per token and steady tokens/s, and the
difference from the plain variant against the seed spread (:data:`~scripts.update_graphs.numbers.SPREAD_RULE`,
the report's one rule). Only done runs enter; a matrix without these axes (or with one variant) has no such section."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from lib.results import Run
from scripts.update_graphs.numbers import SPREAD_RULE, difference, mean_std, summary_mean
from scripts.update_graphs.tables import md_table

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report

METRIC = "loss"
PLAIN = (2.0, 0, "none", 1.0, "none")  # (mlp_ratio, mla, reciprocal, kv_keep, rmlp) of the plain GPT-2
INTRO = (
    "Every variant trained for the same tokens with the same schedule, each seed a separate run; each run's model"
    " passed the causal-leak check before training (`docs/reciprocal.md`). Loss: final validation loss, mean ± std"
    f" over seeds. Δ: difference of the means from the plain variant; {SPREAD_RULE}."
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


def table(groups: dict[Variant, list[Run]]) -> list[str]:
    losses = {v: [r.final(METRIC) for r in runs] for v, runs in groups.items()}
    plain = losses.get(PLAIN)
    rows = []
    for v, runs in groups.items():
        m, sd = mean_std(losses[v])
        delta = "" if plain is None or v == PLAIN else difference(losses[v], plain).text(lambda x: f"{x:.4f}")
        params, flops, speed = (summary_mean(runs, k) for k in ("parameters", "flops_per_token", "throughput_steady"))
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
