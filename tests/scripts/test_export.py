"""Results you can use elsewhere: results.csv and steps.csv, the DuckDB database and `make query`, the
comparison of two matrices, report.html. Fixture matrices as the training loop leaves them (test_update_graphs'
``write_run``), finals chosen exactly representable in binary so that sums and means are exact."""

from __future__ import annotations

import base64
import csv
import json
import math
import re
import statistics
from pathlib import Path

import pytest

from lib.database import DATABASE, EXAMPLE, query
from lib.errors import UserError
from lib.export import MEMORY_FIELDS
from lib.results import METRICS, SUMMARY, read_json, read_jsonl
from scripts import query as query_cli
from scripts.update_graphs import main
from scripts.update_graphs.html import to_html
from tests.helpers import make_run
from tests.scripts.test_update_graphs import axes, run_name, write_run

# matrix -> (optimizer, pruning, target sparsity) -> final accuracy of seeds 0 and 1
FINALS = {
    "base": {
        ("adamw", "none", 0.0): (0.75, 0.875),
        ("adamw", "magnitude", 0.5): (0.625, 0.5),
        ("sgd", "none", 0.0): (0.5, 0.625),
    },
    "tuned": {
        ("adamw", "none", 0.0): (0.875, 0.9375),
        ("adamw", "magnitude", 0.5): (0.75, 0.625),
    },
}
FAILED = axes("lenet5", "sgd", "magnitude", 0.5, 0)
PENDING = axes("lenet5", "sgd", "magnitude", 0.5, 1)
GPT = axes("gpt2", "adamw", "none", 0.0, 0)
MEMORY = {  # as lib.memory writes it: the counted bytes nested
    "device": "cuda:0",
    "peak_allocated_bytes": 1000,
    "peak_reserved_bytes": 2048,
    "peak_device_bytes": 500_000_000,
    "cuda_context_bytes": 450_000_000,
    "peak_rss_bytes": 3_000_000,
    "counted": {
        "param_bytes": 246_000,
        "grad_bytes": 246_000,
        "optimizer_state_bytes": 492_000,
        "mask_bytes": 0,
        "state_x_weights": 2.0,
    },
}
RUN_COLUMNS = ["run_id", "model", "optimizer", "pruning", "target_sparsity", "seed", "state", "metric", "metric_mode"]
TAIL = [
    "sparsity",
    "train_seconds",
    "throughput",
    "throughput_steady",
    "throughput_unit",
    "mfu",
    "steps",
    "peak_memory_bytes",
]
TAIL += [*MEMORY_FIELDS, "reason"]


def patch_summary(run_dir: Path, **changes: object) -> None:
    summary = read_json(run_dir / SUMMARY)
    (run_dir / SUMMARY).write_text(json.dumps({**summary, **changes}))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RESULTS_DIR with matrices base and tuned (and latest -> base), drawn and compared in one call."""
    results = tmp_path_factory.mktemp("results")
    for name, finals in FINALS.items():
        for (optimizer, pruning, sparsity), values in finals.items():
            for seed, final in enumerate(values):
                write_run(results / name, axes("lenet5", optimizer, pruning, sparsity, seed), final=final, matrix=name)
    base, tuned = results / "base", results / "tuned"
    write_run(base, FAILED, state="failed", final=None, reason="loss became NaN", steps=40, matrix="base")
    write_run(base, PENDING, state="pending", matrix="base")
    patch_summary(base / run_name(axes("lenet5", "adamw", "none", 0.0, 0)), memory=MEMORY)
    patch_summary(base / run_name(axes("lenet5", "sgd", "none", 0.0, 1)), mask_bytes=7)
    gpt = write_run(tuned, GPT, metric="loss", mode="min", final=3.0, matrix="tuned")
    patch_summary(tuned / gpt, throughput_unit="tokens/s")  # a language model: perplexity = exp(loss)
    (results / "latest").symlink_to("base")
    no_config = str(tmp_path_factory.mktemp("config") / ".config")  # Kconfig defaults, whatever ./.config says
    assert main(["--config", no_config, "--results", str(results), "--matrix", f"{base} {tuned}"]) == 0
    return results


def value(text: str) -> object:
    """A CSV cell read back: empty -> None, then an int, a float, a boolean or the text."""
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text, text)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, object]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), [{k: value(v) for k, v in row.items()} for row in reader]


def expected_row(run_dir: Path, metrics: list[str]) -> dict[str, object]:
    """What results.csv must say about a run, read off its files."""
    config, summary = read_json(run_dir / "config.json"), read_json(run_dir / SUMMARY) or {}
    final, best = summary.get("final") or {}, summary.get("best") or {}
    if summary.get("throughput_unit") == "tokens/s":
        final, best = {**final, "perplexity": math.exp(final["loss"])}, {**best, "perplexity": math.exp(best["loss"])}
    memory = summary.get("memory") or {}
    counted = memory.get("counted") or {}
    state = summary.get("status") or read_json(run_dir / "status.json")["state"]
    row = {"run_id": config["run_id"], **config["axes"], "state": state}
    row.update(metric=summary.get("metric"), metric_mode=summary.get("metric_mode"))
    row.update({f"final_{m}": final.get(m) for m in metrics} | {f"best_{m}": best.get(m) for m in metrics})
    row.update({"best_step": best.get("step"), **{k: summary.get(k) for k in TAIL[:8]}})
    row.update({k: memory.get(k, counted.get(k)) for k in MEMORY_FIELDS})
    row.update(mask_bytes=counted.get("mask_bytes", summary.get("mask_bytes")), reason=summary.get("reason"))
    return row


@pytest.mark.parametrize(
    ("matrix", "metrics"), [("base", ["accuracy", "loss"]), ("tuned", ["accuracy", "loss", "perplexity"])]
)
def test_results_csv_rows_equal_the_summaries(results: Path, matrix: str, metrics: list[str]) -> None:
    columns, rows = read_csv(results / matrix / "results.csv")
    finals, bests = [f"final_{m}" for m in metrics], [f"best_{m}" for m in metrics]
    assert columns == [*RUN_COLUMNS, *finals, *bests, "best_step", *TAIL]
    run_dirs = sorted((p for p in (results / matrix).iterdir() if (p / "config.json").is_file()), key=lambda p: p.name)
    assert rows == [expected_row(run_dir, metrics) for run_dir in run_dirs]
    by_id = {row["run_id"]: row for row in rows}
    if matrix == "base":
        assert by_id[run_name(axes("lenet5", "adamw", "none", 0.0, 0))]["peak_rss_bytes"] == 3_000_000
        assert by_id[run_name(axes("lenet5", "adamw", "none", 0.0, 0))]["state_x_weights"] == 2.0
        assert by_id[run_name(axes("lenet5", "sgd", "none", 0.0, 1))]["mask_bytes"] == 7  # the summary's own
        assert by_id[run_name(FAILED)]["reason"] == "loss became NaN"
        assert by_id[run_name(PENDING)]["state"] == "pending"
    else:
        assert by_id[run_name(GPT)]["final_perplexity"] == math.exp(3.0)


@pytest.mark.parametrize("matrix", ["base", "tuned"])
def test_steps_csv_rows_equal_metrics_jsonl(results: Path, matrix: str) -> None:
    columns, rows = read_csv(results / matrix / "steps.csv")
    assert columns == ["run_id", "split", "step", "accuracy", "epoch", "loss", "lr", "sparsity"]
    expected = []
    for run_dir in sorted(p for p in (results / matrix).iterdir() if (p / METRICS).is_file()):
        expected += [{"run_id": run_dir.name, **row} for row in read_jsonl(run_dir / METRICS)]
    assert [{k: v for k, v in row.items() if v is not None} for row in rows] == expected


def test_database_holds_every_matrix_of_results_dir(results: Path) -> None:
    assert sorted(p.name for p in results.iterdir()) == ["base", "compare-base-tuned", "latest", DATABASE, "tuned"]
    sql = (
        "select matrix, count(*) as runs, count(final_accuracy) as finished, avg(final_accuracy) as accuracy, "
        "max(final_perplexity) as perplexity from runs group by matrix order by matrix"
    )
    columns, rows = query(results, sql)
    assert columns == ["matrix", "runs", "finished", "accuracy", "perplexity"]
    assert rows == [("base", 8, 6, 3.875 / 6, None), ("tuned", 5, 4, 3.1875 / 4, math.exp(3.0))]
    steps = {name: sum(len(read_jsonl(p / METRICS)) for p in (results / name).iterdir()) for name in FINALS}
    _, rows = query(results, "select matrix, count(*) from steps group by all order by matrix")
    assert rows == [("base", steps["base"]), ("tuned", steps["tuned"])]
    _, rows = query(results, "select peak_device_bytes, optimizer_state_bytes from runs where peak_device_bytes > 0")
    assert rows == [(500_000_000, 492_000)]


def test_query_prints_a_table(results: Path, capsys: pytest.CaptureFixture) -> None:
    sql = "select matrix, count(*) as runs, avg(final_accuracy) as accuracy from runs group by all order by matrix"
    assert query_cli.main(["--set", f"RESULTS_DIR={results}", sql]) == 0
    assert capsys.readouterr().out == (
        "matrix  runs            accuracy\n"
        "------  ----  ------------------\n"
        "base       8  0.6458333333333334\n"
        "tuned      5            0.796875\n"
        "(2 rows)\n"
    )


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("-- nothing", f"SQL is empty: name a query, e.g. `{EXAMPLE}`"),
        ("select nope from runs", 'SQL: Binder Error: Referenced column "nope" not found in FROM clause!'),
        ("delete from runs", 'SQL: Invalid Input Error: Cannot execute statement of type "DELETE"'),
    ],
)
def test_a_bad_query_is_one_error(results: Path, sql: str, message: str) -> None:
    with pytest.raises(UserError) as error:
        query(results, sql)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_no_database_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(UserError) as error:
        query(tmp_path, "select 1")
    assert str(error.value) == (
        f"no results database at {tmp_path / DATABASE}: `make update-graphs` builds it from the matrices in "
        f'{tmp_path}/ (SET="RESULTS_DIR=<dir>" names another RESULTS_DIR)'
    )


def test_make_query_passes_sql_as_text(results: Path, tmp_path: Path) -> None:
    mark = tmp_path / "MARK"
    config = f"KCONFIG_CONFIG={tmp_path / 'missing.config'}"
    hostile = f"$(shell touch {mark})`touch {mark}`"
    sql = f"select '{hostile}' as text, count(*) as runs from runs where matrix = 'tuned'"
    proc = make_run("query", config, f"SET=RESULTS_DIR={results}", f"SQL={sql}")
    assert proc.returncode == 0, proc.stderr
    width = len(hostile)
    assert proc.stdout == f"{'text':<{width}}  runs\n{'-' * width}  ----\n{hostile}     5\n(1 row)\n"
    proc = make_run("query", config, f"SET=RESULTS_DIR={results}", f"SQL=select '{hostile}' from nowhere")
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("make: ")]
    assert len(errors) == 1
    assert errors[0].startswith("error: SQL: Catalog Error: Table with name nowhere does not exist!")
    assert errors[0].endswith("(tables: runs, steps; their columns: docs/results.md)")
    assert not mark.exists()


def test_comparison_has_the_exact_differences(results: Path) -> None:
    out = results / "compare-base-tuned"
    columns, rows = read_csv(out / "comparison.csv")
    axis = ["model", "optimizer", "pruning", "target_sparsity"]
    assert columns == ["metric", *axis, "mean:base", "runs:base", "mean:tuned", "runs:tuned", "diff:tuned"]
    mean = statistics.fmean
    assert rows == [
        dict(zip(columns, ["accuracy", "lenet5", "adamw", "magnitude", 0.5, 0.5625, 2, 0.6875, 2, 0.125], strict=True)),
        dict(zip(columns, ["accuracy", "lenet5", "adamw", "none", 0.0, 0.8125, 2, 0.90625, 2, 0.09375], strict=True)),
        dict(zip(columns, ["accuracy", "lenet5", "sgd", "none", 0.0, 0.5625, 2, None, 0, None], strict=True)),
        dict(zip(columns, ["loss", "gpt2", "adamw", "none", 0.0, None, 0, 3.0, 1, None], strict=True)),
    ]
    assert rows[0]["diff:tuned"] == mean(FINALS["tuned"][("adamw", "magnitude", 0.5)]) - mean((0.625, 0.5))
    lines = (out / "report.md").read_text().splitlines()
    start = lines.index("## Final accuracy (%)")
    assert lines[start + 2 : start + 7] == [
        "| model | optimizer | pruning | target_sparsity | base | tuned | Δ tuned − base |",
        "|---|---|---|---|---|---|---|",
        "| lenet5 | adamw | magnitude | 0.5 | 56.25 ± 8.84 (2) | 68.75 ± 8.84 (2) | +12.50 |",
        "| lenet5 | adamw | none | 0.0 | 81.25 ± 8.84 (2) | 90.62 ± 4.42 (2) | +9.38 |",
        "| lenet5 | sgd | none | 0.0 | 56.25 ± 8.84 (2) | — | — |",
    ]
    start = lines.index("## Final loss")
    assert lines[start + 4] == "| gpt2 | adamw | none | 0.0 | — | 3.000 (1) | — |"
    _, combined = read_csv(out / "results.csv")
    assert [(r["matrix"], r["run_id"]) for r in combined] == [
        (name, p.name) for name in FINALS for p in sorted((results / name).iterdir()) if (p / "config.json").exists()
    ]
    assert (out / "report.html").is_file()


def test_comparing_two_matrices_of_one_name_is_one_error(tmp_path: Path) -> None:
    for where in ("x", "y"):
        write_run(tmp_path / where / "m", axes("lenet5", "adamw", "none", 0.0, 0))
    config = ["--config", str(tmp_path / ".config")]
    with pytest.raises(UserError) as error:
        main([*config, "--matrix", f"{tmp_path / 'x' / 'm'} {tmp_path / 'y' / 'm'}"])
    assert str(error.value) == (
        f"MATRIX names two matrices called m ({tmp_path / 'x' / 'm'} and {tmp_path / 'y' / 'm'}): "
        "compare matrices with different names"
    )
    with pytest.raises(UserError) as error:
        main([*config, "--results", str(tmp_path), "--matrix", f"{tmp_path / 'x' / 'm'} {tmp_path / 'z'}"])
    assert str(error.value) == (
        f"matrix directory {tmp_path / 'z'} does not exist: pass MATRIX=<dir> (--matrix <dir>) naming a directory "
        f"under {tmp_path}/, or run `make` first (MATRIX names 2 matrices to compare, separated by spaces)"
    )
    assert not (tmp_path / "x" / "m" / "report.md").exists()


def test_report_html_has_every_figure_inline(results: Path) -> None:
    report = (results / "base" / "report.md").read_text()
    page = (results / "base" / "report.html").read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(figures) > 5
    for figure in figures:
        data = base64.b64encode((results / "base" / figure).read_bytes()).decode()
        assert f'src="data:image/png;base64,{data}"' in page, figure
    assert page.count("<img ") == len(figures)


def test_html_of_the_markdown_subset(tmp_path: Path) -> None:
    (tmp_path / "g.png").write_bytes(b"\x89PNG")
    png = base64.b64encode(b"\x89PNG").decode()
    markdown = "\n".join(
        [
            "# Matrix `m`",
            "",
            "> a *test*",
            "",
            "**2 runs:** 1 < 2 & [link](a.md)",
            "",
            "| run | value |",
            "|---|---|",
            "| `a\\|b` | 1 |",
            "",
            "- one",
            "- two",
            "",
            "````text",
            "```",
            "<tag>",
            "````",
            "![fig](g.png) ![missing](none.png) ![pdf](g.pdf)",
        ]
    )
    body = to_html(markdown, tmp_path).split("<body>\n")[1].split("\n</body>")[0]
    assert body.splitlines() == [
        "<h1>Matrix <code>m</code></h1>",
        "<blockquote>",
        "<p>a <em>test</em></p>",
        "</blockquote>",
        '<p><strong>2 runs:</strong> 1 &lt; 2 &amp; <a href="a.md">link</a></p>',
        "<table>",
        "<thead><tr><th>run</th><th>value</th></tr></thead>",
        "<tbody>",
        "<tr><td><code>a|b</code></td><td>1</td></tr>",
        "</tbody>",
        "</table>",
        "<ul>",
        "<li>one</li>",
        "<li>two</li>",
        "</ul>",
        '<pre><code class="language-text">```',
        "&lt;tag&gt;</code></pre>",
        f'<p><img src="data:image/png;base64,{png}" alt="fig"> <img src="none.png" alt="missing"> '
        f'<img src="data:image/png;base64,{png}" alt="pdf"></p>',
    ]
