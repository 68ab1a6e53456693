"""The "Published comparison" report section on fixture matrices: each reproduction's table in the published
layout, our mean over seeds beside each published figure, read back from report.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lib import published
from lib.results import CONFIG, STATUS, SUMMARY
from scripts.update_graphs.report import update_graphs

SEEDS = (0, 1)


def ours(cell: published.Cell, seed: int) -> float:
    """A made-up figure of seed ``seed`` in a cell: off the published one, so the two cannot be mixed up."""
    base = cell.value if cell.value is not None else 50.0
    return base - 1.5 + (0.25 if seed else -0.25)  # mean over SEEDS: published - 1.5


def write_matrix(matrix_dir: Path, table: published.Table, name: str, cells: list[published.Cell]) -> None:
    """One done run per (cell, seed), as the training loop leaves its config, status and summary."""
    for i, cell in enumerate(cells):
        axes = {k: v for k, v in cell.match.items() if k != "base"}
        axes.setdefault("target_sparsity", 0.0)
        model = "gpt2" if table.metric == "perplexity" else "resnet"
        for seed in SEEDS:
            run_id = f"{model}-cell{i}-seed{seed}"
            run = matrix_dir / run_id
            run.mkdir(parents=True)
            values = {"MATRIX_DESCRIPTION": "fixture", "ADAMWPRUNE_BASE": cell.match.get("base", "adamw")}
            config = {"run_id": run_id, "matrix": name, "axes": {"model": model, **axes, "seed": seed}}
            (run / CONFIG).write_text(json.dumps({**config, "values": values}))
            (run / STATUS).write_text(json.dumps({"state": "done", "step": 10, "total_steps": 10}))
            value = ours(cell, seed) / (100 if table.unit == "%" else 1)
            summary = {
                "run_id": run_id,
                "status": "done",
                "metric": table.metric,
                "metric_mode": "min" if table.metric == "perplexity" else "max",
                "final": {table.metric: value, "loss": 1.0},
                "steps": cell.iterations or 10,
                "train_seconds": 3600.0 + 600 * seed,  # mean 1h05m
                "memory": {"counted": {"state_x_weights": 2.0 + seed}},  # mean 2.50
            }
            (run / SUMMARY).write_text(json.dumps(summary))


def table_rows(report: str, title: str, key_cells: int = 1) -> tuple[list[str], dict[str, list[str]]]:
    """The header and the rows (its first ``key_cells`` cells joined by " | " -> the rest) of the table under
    heading ``### title``."""
    lines = report.splitlines()
    start = lines.index(f"### {title}")
    block = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip("|").split(" | ")])
        elif block:
            break
    header, rows = block[0], block[2:]
    return header, {" | ".join(r[:key_cells]): r[key_cells:] for r in rows}


def render(tmp_path: Path, table: published.Table, name: str, cells: list[published.Cell]) -> str:
    matrix_dir = tmp_path / name
    write_matrix(matrix_dir, table, name, cells)
    return update_graphs(matrix_dir).read_text()


def test_adamwprune_gpt2_table_in_the_published_layout(tmp_path: Path) -> None:
    table = published.ADAMWPRUNE_GPT2
    report = render(tmp_path, table, "gpt2-adamwprune-bitter", list(table.cells))
    header, rows = table_rows(report, table.title, key_cells=2)
    assert header == [
        "Optimizer",
        "Algorithm",
        "Final perplexity",
        "published",
        "Iterations",
        "Training time",
        "Memory (× weights)",
    ]
    assert list(rows) == list(table.rows)
    for cell in table.cells:
        ppl, pub, iters, time, memory = rows[cell.row]
        assert (float(ppl), float(pub)) == (round(cell.value - 1.5, 2), cell.value)
        assert (iters, time, memory) == (f"{cell.iterations:,}", "1h05m", "2.50")
    assert "bitter2 12,100" in report and "bitter3 13,000" in report


@pytest.mark.parametrize(
    "table",
    [published.RESNET18_PRUNING, published.RESNET18_OPTIMIZERS, published.RESNET50_CIFAR100],
    ids=lambda t: t.key,
)
def test_resnet_tables_in_the_published_layout(tmp_path: Path, table: published.Table) -> None:
    report = render(tmp_path, table, table.defconfigs[0], list(table.cells))
    header, rows = table_rows(report, table.title)
    assert header[0] == table.row_header and header[1::2] == [f"{c} (ours, %)" for c in table.columns]
    assert set(header[2::2]) == {"published"}
    assert list(rows) == list(table.rows)
    for row in table.rows:
        for c, column in enumerate(table.columns):
            cell = table.cell(row, column)
            got = rows[row][2 * c : 2 * c + 2]
            if cell is None:
                assert got == ["", ""]
                continue
            want_pub = "—" if cell.value is None else f"{cell.value:.2f}"
            assert got == [f"{ours(cell, 0) / 2 + ours(cell, 1) / 2:.2f}", want_pub], (row, column)


def test_resnet50_adamw_base_matrix_fills_only_its_column(tmp_path: Path) -> None:
    table = published.RESNET50_CIFAR100
    mine = [c for c in table.cells if c.match.get("base") == "adamw"]
    report = render(tmp_path, table, "resnet50-adamwprune-adamw-base", mine)
    _, rows = table_rows(report, table.title)
    assert rows["50%"] == ["—", "74.56", "—", "73.89", "71.34", "72.84"]
    assert rows["baseline"] == ["—", "72.60", "—", "72.60", "70.36", "71.86"]


def test_no_section_for_a_matrix_that_reproduces_nothing(tmp_path: Path) -> None:
    table = published.RESNET18_OPTIMIZERS
    report = render(tmp_path, table, "quickstart", list(table.cells))
    assert "Published comparison" not in report
