"""The published figure set, read back from the figures themselves: what each draws equals the run directories'
summaries and metrics, each has a title, labelled axes and a legend, a method has one colour everywhere,
GRAPH_FORMATS decides the files, and run directories from before memory was measured still get a report."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from lib.errors import UserError
from lib.results import METRICS, SUMMARY
from scripts.update_graphs import main, report
from scripts.update_graphs.numbers import difference
from scripts.update_graphs.settings import GraphSettings
from tests.scripts.test_update_graphs import axes, write_run

MIB = 2**20
# (model, optimizer, pruning, target sparsity) -> the final eval value of seeds 0 and 1
FINALS = {
    ("lenet5", "adamw", "none", 0.0): (0.985, 0.99),
    ("lenet5", "adamw", "magnitude", 0.5): (0.975, 0.97),
    ("lenet5", "adamw", "magnitude", 0.9): (0.93, 0.90),
    ("lenet5", "adamwprune", "state", 0.5): (0.98, 0.976),
    ("lenet5", "adamwprune", "state", 0.9): (0.95, 0.94),
    ("gpt2", "adamw", "none", 0.0): (3.1, 3.2),  # eval loss
    ("gpt2", "adamw", "magnitude", 0.5): (3.4, 3.3),
}
METHOD = {("adamw", "none"): "adamw dense", ("adamw", "magnitude"): "adamw magnitude"}
METHOD[("adamwprune", "state")] = "adamwprune state"


def method_of(run_axes: dict) -> str:
    return METHOD[(run_axes["optimizer"], run_axes["pruning"])]


def add_memory(run_dir: Path, run_axes: dict, seed: int, i: int) -> None:
    """summary["memory"] and the memory rows of metrics.jsonl as the trainer writes them, distinct per run."""
    pruned, adam_state = run_axes["pruning"] != "none", 2 if run_axes["optimizer"] == "adamw" else 1.1
    params = 250_000 * 4
    masks = params // 4 if pruned else 0
    summary = json.loads((run_dir / SUMMARY).read_text())
    summary["memory"] = {
        "device": "cuda:0",
        "peak_allocated_bytes": (40 + 3 * i) * MIB + seed * 123_456,
        "peak_reserved_bytes": (64 + 3 * i) * MIB,
        "peak_device_bytes": (500 + 7 * i) * MIB + seed * 3_456_789,
        "cuda_context_bytes": 450 * MIB,
        "peak_rss_bytes": (900 + 11 * i) * MIB + seed * 2_345_678,
        "counted": {
            "param_bytes": params,
            "grad_bytes": params,
            "optimizer_state_bytes": int(adam_state * params) + seed * 1000,
            "mask_bytes": masks,
            "state_x_weights": (int(adam_state * params) + seed * 1000 + masks) / params,
        },
    }
    if run_axes["model"] == "gpt2":
        summary["final"]["perplexity"] = math.exp(summary["final"]["loss"])
    (run_dir / SUMMARY).write_text(json.dumps(summary))
    rows = [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines()]
    for row in rows:
        if row["split"] == "train":  # a train loss of its own for each run
            row["loss"] *= 1 + 0.3 * run_axes["target_sparsity"] + 0.05 * seed + 0.02 * i
    for k in range(12):
        device = (480 + 7 * i) * MIB + k * 1_500_000 + seed * 999
        rows.append(
            {
                "split": "memory",
                "step": 8 * k,
                "time_s": round(0.25 * k + 0.01 * seed, 3),
                "rss_bytes": (850 + 11 * i) * MIB + k * 1_000_000,
                "device_bytes": device,
                "allocated_bytes": 30 * MIB + k * 1000,
                "reserved_bytes": 64 * MIB,
            }
        )
    (run_dir / METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_matrix(matrix_dir: Path, memory: bool, models: tuple[str, ...] = ("lenet5", "gpt2")) -> dict[str, dict]:
    """The runs of FINALS (two seeds each) of ``models``; run id -> its axes."""
    runs = {}
    for i, ((model, optimizer, pruning, sparsity), finals) in enumerate(FINALS.items()):
        if model not in models:
            continue
        for seed, final in enumerate(finals):
            run_axes = axes(model, optimizer, pruning, sparsity, seed)
            kind = {"metric": "loss", "mode": "min"} if model == "gpt2" else {}
            run_id = write_run(matrix_dir, run_axes, final=final, matrix=matrix_dir.name, **kind)
            if memory:
                add_memory(matrix_dir / run_id, run_axes, seed, i)
            runs[run_id] = run_axes
    return runs


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict], dict[str, Figure]]:
    """The matrix, its runs, and every figure update_graphs drew (by name), caught as it is written."""
    matrix_dir = tmp_path_factory.mktemp("results") / "figures"
    runs = write_matrix(matrix_dir, memory=True)
    figures: dict[str, Figure] = {}
    real_save = report.save

    def keep(fig: Figure, stem: Path, formats: tuple[str, ...]) -> None:
        figures[stem.name] = fig
        real_save(fig, stem, formats)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "save", keep)
        report.update_graphs(matrix_dir, GraphSettings(("png",)))
    return matrix_dir, runs, figures


def summaries(matrix_dir: Path, runs: dict[str, dict], model: str) -> dict[tuple[str, float], list[dict]]:
    """(method, target sparsity) -> the summaries of its seeds, read from the run directories."""
    cells = defaultdict(list)
    for run_id, run_axes in runs.items():
        if run_axes["model"] == model:
            summary = json.loads((matrix_dir / run_id / SUMMARY).read_text())
            cells[(method_of(run_axes), run_axes["target_sparsity"])].append(summary)
    return cells


def cell(method: str, sparsity: float, panel: str = "") -> str:
    return f"{panel}{method} @ {100 * sparsity:g}%"


def artists(fig: Figure) -> dict[str, list]:
    """Everything drawn with a gid, by gid."""
    found = defaultdict(list)
    for artist in fig.findobj(lambda a: a.get_gid() is not None):
        found[artist.get_gid()].append(artist)
    return found


def bars(fig: Figure, horizontal: bool = False) -> dict[str, tuple[float, float | None, str]]:
    """gid -> (bar length, half-length of its error bar or None, colour)."""
    found = artists(fig)
    out = {}
    for gid, (rect, *_) in found.items():
        if not isinstance(rect, Rectangle):
            continue
        length = rect.get_width() if horizontal else rect.get_height()
        err = None
        if f"{gid} ±std" in found:
            (segment,) = found[f"{gid} ±std"][0].get_segments()
            err = abs(segment[1][0 if horizontal else 1] - segment[0][0 if horizontal else 1]) / 2
        out[gid] = (length, err, to_hex(rect.get_facecolor()))
    return out


def stats(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values)


def assert_bars(fig: Figure, expected: dict[str, list[float]], horizontal: bool = False) -> None:
    """Each bar is the mean of its seeds' values, its error bar their sample std (ddof=1)."""
    drawn = bars(fig, horizontal)
    assert set(drawn) == set(expected)
    for gid, values in expected.items():
        mean, std = stats(values)
        assert drawn[gid][0] == pytest.approx(mean, rel=1e-9), gid
        assert drawn[gid][1] == pytest.approx(std, rel=1e-6), gid


def test_accuracy_vs_sparsity_has_every_method_and_the_dense_reference(drawn) -> None:
    matrix_dir, runs, figures = drawn
    fig = figures["accuracy-vs-sparsity-lenet5"]
    cells = summaries(matrix_dir, runs, "lenet5")
    found = artists(fig)
    for method in ("adamw magnitude", "adamwprune state"):
        (line,) = [a for a in found[method] if isinstance(a, Line2D)]
        assert list(line.get_xdata()) == [50, 90]
        means = [stats([100 * s["final"]["accuracy"] for s in cells[(method, x)]])[0] for x in (0.5, 0.9)]
        assert list(line.get_ydata()) == pytest.approx(means)
        (errors,) = found[f"{method} ±std"]
        half = [abs(b[1] - a[1]) / 2 for a, b in errors.get_segments()]
        stds = [stats([100 * s["final"]["accuracy"] for s in cells[(method, x)]])[1] for x in (0.5, 0.9)]
        assert half == pytest.approx(stds)
    (dense,) = found["adamw dense"]  # the reference line: horizontal, at the mean of its seeds
    mean, std = stats([100 * s["final"]["accuracy"] for s in cells[("adamw dense", 0.0)]])
    assert list(dense.get_ydata()) == pytest.approx([mean, mean])
    (band,) = found["adamw dense ±std"]
    assert [band.get_y(), band.get_y() + band.get_height()] == pytest.approx([mean - std, mean + std])


def test_memory_bars_are_the_peak_device_memory(drawn) -> None:
    matrix_dir, runs, figures = drawn
    cells = summaries(matrix_dir, runs, "lenet5")
    fig = figures["memory-peak-lenet5"]
    assert fig.axes[0].get_ylabel() == "peak device memory (MiB)"
    expected = {cell(m, s): [x["memory"]["peak_device_bytes"] / MIB for x in seeds] for (m, s), seeds in cells.items()}
    assert_bars(fig, expected)


def test_six_panels_show_peaks_counted_bytes_and_accuracy(drawn) -> None:
    matrix_dir, runs, figures = drawn
    cells = summaries(matrix_dir, runs, "lenet5")
    fig = figures["memory-panels-lenet5"]
    panels = {
        "peak_device_bytes": lambda s: s["memory"]["peak_device_bytes"] / MIB,
        "peak_rss_bytes": lambda s: s["memory"]["peak_rss_bytes"] / MIB,
        "optimizer_state_bytes": lambda s: s["memory"]["counted"]["optimizer_state_bytes"] / MIB,
        "mask_bytes": lambda s: s["memory"]["counted"]["mask_bytes"] / MIB,
        "state_x_weights": lambda s: s["memory"]["counted"]["state_x_weights"],
        "accuracy": lambda s: 100 * s["final"]["accuracy"],
    }
    expected = {
        cell(m, s, f"{key}: "): [value(x) for x in seeds]
        for key, value in panels.items()
        for (m, s), seeds in cells.items()
    }
    assert_bars(fig, expected)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == [
        "peak device memory (MiB)",
        "peak host RSS (MiB)",
        "optimizer state (MiB)",
        "pruning masks (MiB)",
        "training state (× weight bytes)",
        "final accuracy (%)",
    ]


def test_memory_vs_accuracy_has_one_point_per_run(drawn) -> None:
    matrix_dir, runs, figures = drawn
    cells = summaries(matrix_dir, runs, "lenet5")
    found = artists(figures["memory-vs-accuracy-lenet5"])
    for (method, sparsity), seeds in cells.items():
        (points,) = found[cell(method, sparsity)]
        assert isinstance(points, PathCollection)
        expected = [(s["memory"]["peak_device_bytes"] / MIB, 100 * s["final"]["accuracy"]) for s in seeds]
        drawn = sorted(map(tuple, points.get_offsets()))
        assert [v for xy in drawn for v in xy] == pytest.approx([v for xy in sorted(expected) for v in xy])


def test_efficiency_ranks_accuracy_per_100_mib(drawn) -> None:
    matrix_dir, runs, figures = drawn
    cells = summaries(matrix_dir, runs, "lenet5")
    fig = figures["efficiency-lenet5"]
    scores = {
        cell(m, s): [100 * x["final"]["accuracy"] / (x["memory"]["peak_device_bytes"] / MIB / 100) for x in seeds]
        for (m, s), seeds in cells.items()
    }
    assert_bars(fig, scores, horizontal=True)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == sorted(scores, key=lambda gid: -statistics.mean(scores[gid]))  # highest first
    rects = {gid: a[0] for gid, a in artists(fig).items() if isinstance(a[0], Rectangle)}
    assert sorted(ticks, key=lambda t: rects[t].get_y()) == ticks  # drawn top down (the y axis is inverted)


def test_memory_timeline_is_each_runs_device_memory(drawn) -> None:
    matrix_dir, runs, figures = drawn
    found = artists(figures["memory-timeline-lenet5"])
    assert figures["memory-timeline-lenet5"].axes[0].get_xlabel() == "time since the run started (s)"
    for run_id, run_axes in runs.items():
        if run_axes["model"] != "lenet5":
            assert run_id not in found
            continue
        rows = [json.loads(line) for line in (matrix_dir / run_id / METRICS).read_text().splitlines()]
        rows = [r for r in rows if r["split"] == "memory"]
        (line,) = found[run_id]
        assert list(line.get_xdata()) == [r["time_s"] for r in rows]
        assert list(line.get_ydata()) == pytest.approx([r["device_bytes"] / MIB for r in rows])


def test_evolution_is_the_mean_over_seeds_per_step(drawn) -> None:
    matrix_dir, runs, figures = drawn
    fig = figures["evolution-accuracy-lenet5"]
    ax_metric, ax_loss = fig.axes
    by_cell = defaultdict(list)
    for run_id, run_axes in runs.items():
        if run_axes["model"] == "lenet5":
            rows = [json.loads(line) for line in (matrix_dir / run_id / METRICS).read_text().splitlines()]
            by_cell[cell(method_of(run_axes), run_axes["target_sparsity"])].append(rows)
    for gid, seeds in by_cell.items():
        for ax, split, key, scale in ((ax_metric, "eval", "accuracy", 100), (ax_loss, "train", "loss", 1)):
            (line,) = [a for a in ax.get_children() if a.get_gid() == gid]
            series = [{r["step"]: scale * r[key] for r in rows if r["split"] == split} for rows in seeds]
            steps = sorted(series[0])
            assert list(line.get_xdata()) == steps
            assert list(line.get_ydata()) == pytest.approx([statistics.mean(s[t] for s in series) for t in steps])
            (band,) = [a for a in ax.get_children() if a.get_gid() == f"{gid} ±std"]
            assert isinstance(band, PolyCollection)


def test_perplexity_is_drawn_for_the_language_model_only(drawn) -> None:
    matrix_dir, runs, figures = drawn
    cells = summaries(matrix_dir, runs, "gpt2")
    expected = {cell(m, s): [x["final"]["perplexity"] for x in seeds] for (m, s), seeds in cells.items()}
    for seeds in cells.values():  # the perplexity the runs record: exp of the eval loss
        assert [x["final"]["perplexity"] for x in seeds] == pytest.approx([math.exp(x["final"]["loss"]) for x in seeds])
    assert_bars(figures["perplexity-gpt2"], expected)
    assert "perplexity-lenet5" not in figures


def titles(fig: Figure) -> list[str]:
    suptitle = fig.get_suptitle()
    return [suptitle] if suptitle else [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_every_figure_has_a_title_labelled_axes_a_legend_and_data(drawn) -> None:
    _, _, figures = drawn
    published = (
        "accuracy-vs-sparsity-lenet5",
        "memory-peak-lenet5",
        "memory-panels-lenet5",
        "memory-vs-accuracy-lenet5",
        "efficiency-lenet5",
        "memory-timeline-lenet5",
        "evolution-accuracy-lenet5",
        "perplexity-gpt2",
    )
    assert set(published) <= set(figures)
    for name, fig in figures.items():
        assert titles(fig) and all(titles(fig)), name
        data_axes = [ax for ax in fig.axes if ax.get_xlabel() or ax.get_ylabel()]
        for ax in data_axes:
            twin = any(o is not ax and o.get_position().bounds == ax.get_position().bounds for o in fig.axes)
            assert (ax.get_xlabel() or twin) and ax.get_ylabel(), name  # a twin axis shares its x label
            assert ax.lines or ax.patches or ax.collections, f"{name}: an empty panel"
        assert fig.legends or any(ax.get_legend() for ax in fig.axes), name
        if name in published:  # units on every value axis
            assert all("(" in ax.get_ylabel() or name.startswith("efficiency") for ax in data_axes), name


def test_a_method_has_one_colour_in_every_figure(drawn) -> None:
    _, runs, figures = drawn
    colours = defaultdict(set)  # method -> every colour it is drawn in
    for fig in figures.values():
        for gid, found in artists(fig).items():
            gid = gid.removesuffix(" ±std").split(": ")[-1]
            method = method_of(runs[gid]) if gid in runs else gid.split(" @ ")[0]
            for artist in found:
                if isinstance(artist, Line2D):
                    colours[method].add(to_hex(artist.get_color()))
                elif isinstance(artist, Rectangle):
                    colours[method].add(to_hex(artist.get_facecolor()))
                elif isinstance(artist, PathCollection):
                    colours[method].update(to_hex(c) for c in artist.get_facecolor())
                # error bars (LineCollection) are grey; ± std bands (PolyCollection) are their line's colour, faded
        for legend in fig.legends:  # the method legends' patches too
            for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
                if isinstance(handle, Rectangle):
                    colours[text.get_text()].add(to_hex(handle.get_facecolor()))
    assert set(colours) == {"adamw dense", "adamw magnitude", "adamwprune state"}
    assert all(len(c) == 1 for c in colours.values()), colours
    assert len({c for cs in colours.values() for c in cs}) == 3  # and no two methods share one


def test_graph_formats_decide_the_files_and_the_report_links_the_first(tmp_path: Path) -> None:
    matrix_dir = tmp_path / "vector"
    write_matrix(matrix_dir, memory=True, models=("lenet5",))
    assert (
        main(["--matrix", str(matrix_dir), "--config", str(tmp_path / "none"), "--set", "GRAPH_FORMATS='svg pdf'"]) == 0
    )
    graphs = matrix_dir / "graphs"
    assert not list(graphs.glob("*.png"))
    svgs, pdfs = sorted(p.stem for p in graphs.glob("*.svg")), sorted(p.stem for p in graphs.glob("*.pdf"))
    assert svgs == pdfs and "memory-panels" in svgs and "accuracy-vs-sparsity" in svgs
    assert (graphs / "memory-panels.svg").read_text().lstrip().startswith("<?xml")
    assert "<svg" in (graphs / "memory-panels.svg").read_text()
    assert (graphs / "memory-panels.pdf").read_bytes().startswith(b"%PDF")
    report_text = (matrix_dir / "report.md").read_text()
    assert "(graphs/memory-panels.svg)" in report_text and ".png)" not in report_text and ".pdf)" not in report_text
    with pytest.raises(UserError, match="GRAPH_FORMATS='png gif': 'gif' is not a graph format: .* png, svg, pdf"):
        main(["--matrix", str(matrix_dir), "--config", str(tmp_path / "none"), "--set", "GRAPH_FORMATS='png gif'"])


def test_runs_from_before_memory_was_measured_still_get_a_report(tmp_path: Path) -> None:
    matrix_dir = tmp_path / "old"
    runs = write_matrix(matrix_dir, memory=False, models=("lenet5",))
    figures: dict[str, Figure] = {}
    real_save = report.save

    def keep(fig: Figure, stem: Path, formats: tuple[str, ...]) -> None:
        figures[stem.name] = fig
        real_save(fig, stem, formats)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "save", keep)
        report.update_graphs(matrix_dir, GraphSettings(("png",)))
    lines = (matrix_dir / "report.md").read_text().splitlines()
    assert [line for line in lines if line.startswith("not measured: ")] == [
        'not measured: training memory: no summary.json of these runs has "memory" (counted optimizer state, masks,'
        " peaks); run directories from before memory was measured",
        "not measured: memory timeline: no run has memory rows in metrics.jsonl (sampling off, MEMORY_SAMPLE_MS=0,"
        " or run directories from before memory was sampled)",
    ]
    assert "memory-panels" not in figures and "memory-timeline" not in figures
    # The peak they recorded (the allocator's, or the RSS on a CPU) still compares them, and the axis says so.
    fig = figures["memory-peak"]
    assert fig.axes[0].get_ylabel() == "peak memory: allocator on GPU, RSS on CPU (MiB)"
    cells = summaries(matrix_dir, runs, "lenet5")
    assert_bars(fig, {cell(m, s): [x["peak_memory_bytes"] / MIB for x in seeds] for (m, s), seeds in cells.items()})
    assert {"memory-vs-accuracy", "efficiency", "accuracy-vs-sparsity", "evolution-accuracy"} <= set(figures)


def test_a_difference_exceeds_the_seed_spread_by_the_combined_std() -> None:
    # means 2 and 0; sample stds √2 and 0: the spread is √2 < 2
    assert difference([1.0, 3.0], [0.0, 0.0]).text(lambda v: f"{v:.2f}") == "+2.00 (exceeds ±1.41)"
    assert difference([1.0, 3.0], [1.0, 2.0]).text(lambda v: f"{v:.2f}") == "+0.50 (within ±1.58)"
    assert difference([1.0], [0.0, 0.0]).text(lambda v: f"{v:.2f}") == "+1.00 (one seed)"
    assert difference([0.0, 0.0], [1.0, 3.0]).exceeds is True
