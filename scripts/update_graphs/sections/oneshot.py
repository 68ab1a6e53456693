"""One-shot pruning of the matrix's trained runs (``ONESHOT_AFTER_TRAINING``, or ``make prune`` on a run): per
model, for each training configuration (the run's method label) and one-shot method (with its N:M pattern, if
any), the validation perplexity after pruning at each target sparsity against the trained model's own before
pruning, mean over seeds; a figure and its table. The values are each ``<run>/oneshot/*/prune.json``'s
(:attr:`lib.results.Run.oneshot`), measured on the same validation windows before and after; a matrix whose runs
have none has no such section."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from lib.results import Run
from scripts.update_graphs.figures import new_figure, outside_legend
from scripts.update_graphs.grouping import Methods, done_by_model
from scripts.update_graphs.numbers import mean
from scripts.update_graphs.tables import md_table

if TYPE_CHECKING:
    from scripts.update_graphs.report import Report

INTRO = (
    "Each trained run's best checkpoint pruned once, without retraining, by each one-shot method (`lib/oneshot/`),"
    " calibrated on the run's training text; perplexity on the same validation windows before and after, mean"
    " over seeds. Change: after / before − 1."
)

# (training label, one-shot method with its pattern, target) -> [(before, after, achieved sparsity)]
Results = dict[tuple[str, str, float], list[tuple[float, float, float]]]


def collect(runs: list[Run], methods: Methods) -> Results:
    found: Results = defaultdict(list)
    for run in runs:
        for s in run.oneshot:
            ppl = s.get("perplexity") or {}
            if ppl.get("before") is None or ppl.get("after") is None:
                continue
            name = s["method"] + (s.get("variant") or "") + (f" {s['pattern']}" if s.get("pattern") else "")
            found[(methods.of(run), name, float(s["target"]))].append((ppl["before"], ppl["after"], s["sparsity"]))
    return dict(sorted(found.items()))


def plot_oneshot(found: Results, title: str) -> Figure:
    """Perplexity after pruning vs target sparsity, a line per (training, one-shot method); the trained model's
    own perplexity dashed, one line per training label."""
    fig = new_figure(9, 5)
    ax = fig.subplots()
    lines: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    before: dict[str, list[float]] = defaultdict(list)
    for (trained, method, target), values in found.items():
        lines[(trained, method)].append((target, mean([a for _, a, _ in values])))
        before[trained] += [b for b, _, _ in values]
    for (trained, method), points in lines.items():
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, marker="o", label=f"{method} (trained: {trained})")
    for trained, values in before.items():
        ax.axhline(mean(values), linestyle="--", color="grey", linewidth=1, label=f"before pruning ({trained})")
    ax.set_xlabel("one-shot target sparsity")
    ax.set_ylabel("validation perplexity after pruning (lower is better)")
    ax.set_title(title)
    outside_legend(fig, ax.get_legend_handles_labels()[0], title="one-shot method")
    return fig


def table(found: Results) -> list[str]:
    rows = []
    for (trained, method, target), values in found.items():
        b, a = mean([v[0] for v in values]), mean([v[1] for v in values])
        rows.append(
            [trained, method, f"{target:g}", f"{mean([v[2] for v in values]):.3f}", f"{b:#.4g}", f"{a:#.4g}",
             f"{100 * (a / b - 1):+.1f}%", len(values)]
        )  # fmt: skip
    header = ["trained as", "one-shot", "target", "sparsity", "ppl before", "ppl after", "change", "runs"]
    return md_table(header, rows)


def add(report: Report) -> None:
    found = [(model, collect(runs, report.methods)) for model, runs in done_by_model(report.matrix.runs)]
    found = [(model, results) for model, results in found if results]
    if not found:
        return
    report.heading("One-shot pruning")
    report.add(INTRO, "")
    for model, results in found:
        name_suffix, suffix = report.model_suffix(model)
        title = f"{report.matrix.name}: one-shot pruning{suffix}"
        report.draw(plot_oneshot, f"oneshot{name_suffix}", results, title)
        report.image(title, f"oneshot{name_suffix}")
        report.add(*table(results), "")
