"""Memory over time: each done run's sampled memory (``metrics.jsonl`` rows of split "memory") against the
seconds since it started, in its method's colour (a line style per target sparsity), a figure per model. Seeds
are drawn each, not averaged: their samples fall at different times. The device memory of the process when every
row has it, else the host RSS."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from lib.results import Run
from scripts.update_graphs.charts import sparsity_text
from scripts.update_graphs.figures import new_figure, outside_legend, style_of
from scripts.update_graphs.grouping import Methods
from scripts.update_graphs.memory import timeline, timeline_measure
from scripts.update_graphs.numbers import MIB

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report


def plot_memory_timeline(runs: Sequence[Run], key: str, label: str, methods: Methods, title: str) -> Figure:
    """One line per run (its gid: the run id); a legend entry per method and target sparsity."""
    fig = new_figure(11, 5.5)
    ax = fig.subplots()
    sparsities = [r.target_sparsity or 0.0 for r in runs]
    labelled = set()
    order = {m: i for i, m in enumerate(methods.colours)}
    for run in sorted(runs, key=lambda r: (order[methods.of(r)], r.target_sparsity or 0.0, r.run_id)):
        rows = timeline(run)
        method, sparsity = methods.of(run), run.target_sparsity or 0.0
        entry = f"{method} @ {sparsity_text(sparsity)}"
        style = {**style_of(methods, method, sparsities, sparsity), "marker": ""}
        ax.plot(
            [row["time_s"] for row in rows],
            [row[key] / MIB for row in rows],
            lw=1.2,
            label=entry if entry not in labelled else "_nolegend_",
            gid=run.run_id,
            **style,
        )
        labelled.add(entry)
    ax.set_xlabel("time since the run started (s)")
    ax.set_ylabel(f"{label} (MiB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    outside_legend(fig, title="method @ target sparsity")
    return fig


def add(report: Report) -> None:
    for runs, name_suffix, suffix in report.per_model("Memory timeline"):
        sampled = [r for r in runs if timeline(r)]
        measure = timeline_measure(sampled)
        if measure is None:
            report.not_measured(
                f"memory timeline{suffix}: no run has memory rows in metrics.jsonl (sampling off, "
                "MEMORY_SAMPLE_MS=0, or run directories from before memory was sampled)"
            )
            continue
        key, label = measure
        title = f"{report.matrix.name}: {label} over time{suffix}"
        report.draw(plot_memory_timeline, f"memory-timeline{name_suffix}", sampled, key, label, report.methods, title)
        report.image(title, f"memory-timeline{name_suffix}")
