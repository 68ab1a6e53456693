"""Banded-MLP runs against their dense baseline (the published banded-MLP write-ups' layout): per band width, the
eval metric at each evaluation (columns Baseline / FC1-w / FC2-w / Both-w, the best of each row in bold), every
band pair's final metric with its change vs the baseline, FC1 density and parameter counts, a layer × bandwidth
pivot of that change, the model and training configuration read from the runs' ``config.json``, and the band
formula's FC1 density for the model's shape next to the published table's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lib.published import BANDED_FC1_DENSITY_PUBLISHED, BANDED_FC1_SHAPE
from lib.results import Run
from scripts.update_graphs.grouping import BAND_CONFIGS, BandedGroup, banded_groups
from scripts.update_graphs.numbers import MISSING, fmt, mean, summary_mean
from scripts.update_graphs.tables import md_table

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report

INTRO = (
    "Validation metric at each evaluation, mean over seeds; columns are the dense baseline and FC1 / FC2 /"
    " both banded at one width, the best of each row in bold. Δ is relative to the baseline's final value."
)
# How the per-width tables name the band configurations of BAND_CONFIGS
COLUMN_NAMES = {"FC1": "FC1", "FC2": "FC2", "FC1+FC2": "Both"}
FC1_SUFFIX = ".mlp.c_fc"  # GPT-2's FC1 layers (models/gpt2/model.py mlp_layers), as layer_sparsity names them
# The published banded-FC1 table for GPT-2 small (FC1 2048 x 512) is lib.published.BANDED_FC1_DENSITY_PUBLISHED
DENSITY_NOTE = (
    "The published table lists 21.9% / 10.9% for bandwidths 512 / 256; its own formula, |j − i·r| ≤ bandwidth/2"
    " (`lib/pruning/patterns.py`), gives the values computed here (23.5% / 12.2%), so the published cells"
    " contradict the published formula; 1024 (43.8%) agrees."
)


def _lower_is_better(group: BandedGroup) -> bool:
    runs = [*group.baseline, *(r for rs in group.banded.values() for r in rs)]
    return next((r.summary["metric_mode"] for r in runs if (r.summary or {}).get("metric_mode")), "min") != "max"


def checkpoint_table(group: BandedGroup, width: int) -> list[str]:
    """Rows: the evaluation steps; columns: Baseline, FC1-w, FC2-w, Both-w; cells: mean over seeds, the best of
    each row in bold."""
    metric, best = group.fmt.name, (min if _lower_is_better(group) else max)
    names = {"baseline": "Baseline", **{k: f"{v}-{width}" for k, v in COLUMN_NAMES.items()}}
    columns = [
        (names[name], [dict(zip(*r.series("eval", metric), strict=True)) for r in rs])
        for name, rs in group.columns(width)
    ]
    rows = []
    for step in sorted({step for _, series in columns for s in series for step in s}):
        values = [mean([s[step] for s in series if step in s]) for _, series in columns]
        top = best((v for v in values if v is not None), default=None)
        cells = [MISSING if v is None else group.fmt.number(v) for v in values]
        rows.append(
            [step, *(f"**{c}**" if v is not None and v == top else c for c, v in zip(cells, values, strict=True))]
        )
    return md_table(["Step", *(name for name, _ in columns)], rows)


def _final_order(group: BandedGroup) -> list[tuple[str, tuple[int, int]]]:
    """Each width's FC1 / FC2 / FC1+FC2, then any other (FC1, FC2) pair."""
    order = [(name, pair(w)) for w in group.widths() for name, pair in BAND_CONFIGS if pair(w) in group.banded]
    listed = {pair for _, pair in order}
    return order + [(f"FC1 {a} / FC2 {b}", (a, b)) for a, b in sorted(group.banded) if (a, b) not in listed]


def _finals(group: BandedGroup, runs: Sequence[Run]) -> float | None:
    return mean([v for r in runs if r.state == "done" and (v := r.final(group.fmt.name)) is not None])


def fc1_density(runs: Sequence[Run]) -> float | None:
    """Fraction of FC1 weights kept, from ``summary.json``'s ``layer_sparsity`` (mean over FC1 layers and
    runs); 1 for a done run that pruned no FC1 layer."""
    values = []
    for run in runs:
        layers = (run.summary or {}).get("layer_sparsity")
        if layers is None:
            continue
        fc1 = [s for name, s in layers.items() if name.endswith(FC1_SUFFIX)]
        values.append(1.0 - sum(fc1) / len(fc1) if fc1 else 1.0)
    return mean(values)


def _count(runs: Sequence[Run], key: str) -> str:
    value = summary_mean(runs, key)
    return MISSING if value is None else f"{round(value):,}"


def final_table(group: BandedGroup) -> list[str]:
    """Baseline, then every band pair: the final metric of the done runs (mean over seeds), its change
    relative to the baseline, the achieved sparsity, FC1 density and parameter counts."""
    base = _finals(group, group.baseline)

    def row(name: str, fc1: int, fc2: int, runs: Sequence[Run]) -> list:
        value = _finals(group, runs)
        delta = (
            MISSING if value is None or not base or runs is group.baseline else f"{100 * (value - base) / base:+.2f}%"
        )
        return [
            name,
            fc1 or "dense",
            fc2 or "dense",
            fmt(summary_mean(runs, "sparsity"), ".2f", 100.0),
            fmt(fc1_density(runs), ".1f", 100.0),
            _count(runs, "parameters"),
            _count(runs, "nonzero_parameters"),
            group.fmt.number(value),
            delta,
        ]

    rows = [row("baseline", 0, 0, group.baseline)]
    rows += [row(name, fc1, fc2, group.banded[(fc1, fc2)]) for name, (fc1, fc2) in _final_order(group)]
    header = ["run", "FC1 width", "FC2 width", "sparsity (%)", "FC1 density (%)", "parameters", "nonzero"]
    return md_table([*header, group.fmt.label("final "), "Δ vs baseline"], rows)


def pivot_table(group: BandedGroup) -> list[str]:
    """Layer (FC1, FC2, both) × bandwidth: the final metric minus the baseline's (mean over seeds)."""
    base, widths = _finals(group, group.baseline), group.widths()
    rows = []
    for name, pair in BAND_CONFIGS:
        cells = []
        for w in widths:
            value = _finals(group, group.banded.get(pair(w), []))
            cells.append(MISSING if value is None or base is None else f"{value - base:+.4f}")
        if any(c != MISSING for c in cells):
            rows.append([COLUMN_NAMES[name], *cells])
    return md_table(["layer", *(f"bandwidth {w}" for w in widths)], rows)


def _distinct(runs: Sequence[Run], value) -> str:
    seen = dict.fromkeys(str(v) for r in runs if (v := value(r)) is not None)
    return " / ".join(seen) or MISSING


def model_shape(values: dict) -> tuple[int, int, int, int] | None:
    """(n_layer, n_head, n_embd, block_size) of a GPT-2 run's config values."""
    size = values.get("GPT2_SIZE")
    if size == "custom":
        return tuple(values.get(f"GPT2_{k}") for k in ("N_LAYER", "N_HEAD", "N_EMBD", "BLOCK_SIZE"))
    from models.gpt2.model import PRESETS  # the presets themselves, not a copy

    return PRESETS.get(size)


def _learning_rate(run: Run) -> float | None:
    return run.axes.get("lr") or run.values.get(f"{str(run.axes.get('optimizer', '')).upper()}_LR")


def _schedule(run: Run) -> str:
    v = run.values
    warmup = v.get("LR_WARMUP_STEPS") or 0
    return f"{v.get('LR_SCHEDULE')}, warm-up {warmup}" + (" steps" if warmup else "")


def config_table(group: BandedGroup) -> list[str]:
    """The model and training configuration, read from the runs' ``config.json`` (and ``parameters`` from
    their summaries); a setting that differs between runs lists each value."""
    runs = [*group.baseline, *(r for rs in group.banded.values() for r in rs)]

    def shape(i: int):
        return lambda r: (model_shape(r.values) or (None,) * 4)[i]

    def batch(r: Run) -> str:
        shape_ = model_shape(r.values)
        block = shape_[3] if shape_ else MISSING
        return f"{r.values.get('BATCH_SIZE')} × {r.values.get('GPT2_GRAD_ACCUM', 1)} × {block}"

    def decay(r: Run):
        return r.values.get(f"{str(r.axes.get('optimizer', '')).upper()}_WEIGHT_DECAY")

    settings = [
        ("n_layer", shape(0)),
        ("n_embd", shape(2)),
        ("n_head", shape(1)),
        ("block size", shape(3)),
        ("parameters", lambda r: f"{r.summary['parameters']:,}" if (r.summary or {}).get("parameters") else None),
        ("optimizer", lambda r: r.axes.get("optimizer")),
        ("learning rate", _learning_rate),
        ("betas", lambda r: f"({r.values.get('ADAM_BETA1')}, {r.values.get('ADAM_BETA2')})"),
        ("eps", lambda r: r.values.get("ADAM_EPS")),
        ("weight decay", decay),
        ("batch (sequences × accumulation × tokens)", batch),
        ("steps", lambda r: r.values.get("GPT2_MAX_ITERS")),
        ("validation every", lambda r: r.values.get("GPT2_EVAL_INTERVAL")),
        ("validation at step 0", lambda r: "yes" if r.values.get("EVAL_AT_START") else "no"),
        ("precision", lambda r: r.values.get("PRECISION")),
        ("schedule", _schedule),
        ("data", lambda r: r.values.get("GPT2_DATASET")),
    ]
    return md_table(["setting", "value"], [[name, _distinct(runs, value)] for name, value in settings])


def density_table(group: BandedGroup) -> tuple[list[str], bool]:
    """Bandwidth -> FC1 density of the model's FC1 (4C × C) by the band formula, for the group's widths and
    512 / 256, with the published table's value beside it when the model has its FC1 shape; whether it did."""
    from lib.pruning.patterns import band_density, banded_mask  # torch: only for banded reports

    runs = [*group.baseline, *(r for rs in group.banded.values() for r in rs)]
    shape = next((s for r in runs if (s := model_shape(r.values))), None)
    if shape is None:
        return [], False
    c = shape[2]
    published = BANDED_FC1_DENSITY_PUBLISHED if (4 * c, c) == BANDED_FC1_SHAPE else {}
    widths = sorted({*group.widths(), 512, 256, *published}, reverse=True)
    rows = [
        [w, f"{100 * band_density(banded_mask(4 * c, c, w)):.1f}", f"{published[w]:.1f}" if w in published else MISSING]
        for w in widths
    ]
    header = ["bandwidth", f"FC1 density, formula ({4 * c} × {c}) (%)", "published (%)"]
    return md_table(header, rows), bool(published)


def add(report: Report) -> None:
    groups = banded_groups(report.matrix)
    if not groups:
        return
    report.heading("Banded MLP")
    report.add(INTRO, "")
    for group in groups:
        suffix = f" — {group.label}" if group.label else ""
        for width in group.widths():
            if len(group.columns(width)) > 1:
                report.heading(f"Bandwidth {width}: eval {group.fmt.label()}{suffix}", level=3)
                report.add(*checkpoint_table(group, width), "")
        report.heading(f"Final eval {group.fmt.label()}{suffix}", level=3)
        report.add(*final_table(group), "")
        report.heading(f"Change of final eval {group.fmt.name} vs baseline: layer × bandwidth{suffix}", level=3)
        report.add(*pivot_table(group), "")
        report.heading(f"Model and training configuration{suffix}", level=3)
        report.add(*config_table(group), "")
        table, published = density_table(group)
        if table:
            report.heading(f"FC1 density by bandwidth{suffix}", level=3)
            report.add(*table, "", *((DENSITY_NOTE, "") if published else ()))
