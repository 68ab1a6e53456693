"""Every defconfig that reproduces a published table (lib.published) against that table: the published settings
(schedule, iterations, sparsities, bases, data set), one planned run per published cell and no run the table
lacks, the published iteration budgets, and descriptions that quote the published figures and no others."""

from __future__ import annotations

import math
import re

import pytest

from lib import config as cfgmod
from lib import matrix, published
from lib.estimate import run_budget
from lib.pruning import PRUNERS

REPRODUCTIONS = [t for t in published.TABLES if t.defconfigs]
# Tables whose defconfigs run exactly the published cells (the optimizer ranking is the dense row of a wider
# matrix).
EXACT = ("adamwprune-gpt2", "resnet18-pruning", "resnet50-cifar100")


def load(name: str) -> cfgmod.Config:
    return cfgmod.load(cfgmod.DEFCONFIGS / name)


def plans(table: published.Table) -> list:
    """(run spec, its ADAMWPRUNE_BASE) of every run the table's defconfigs plan."""
    found = []
    for name in table.defconfigs:
        cfg = load(name)
        base = cfg["ADAMWPRUNE_BASE"] if cfg["OPTIMIZER_ADAMWPRUNE"] else None
        found += [(spec, base) for spec in matrix.expand(cfg).runs]
    return found


def fills(cell: published.Cell, spec, base: str | None) -> bool:
    return cell.matches(spec.axes, {"ADAMWPRUNE_BASE": base})


def same(have: object, want: object) -> bool:
    if isinstance(want, float):
        return math.isclose(float(have), want)
    if isinstance(want, tuple):
        return tuple(have) == want
    return have == want


@pytest.mark.parametrize("table", REPRODUCTIONS, ids=lambda t: t.key)
def test_defconfigs_have_the_published_settings(table: published.Table) -> None:
    for name in table.defconfigs:
        cfg = load(name)
        wrong = {k: cfg[k] for k, want in table.settings.items() if not same(cfg[k], want)}
        assert not wrong, f"defconfigs/{name} differs from the published {table.key} setup: {wrong}"


@pytest.mark.parametrize("table", REPRODUCTIONS, ids=lambda t: t.key)
def test_every_published_cell_has_a_planned_run(table: published.Table) -> None:
    runs = plans(table)
    for cell in table.cells:
        assert [s for s, b in runs if fills(cell, s, b)], f"{table.key}: no run fills ({cell.row}, {cell.column})"


@pytest.mark.parametrize("table", [t for t in REPRODUCTIONS if t.key in EXACT], ids=lambda t: t.key)
def test_no_run_outside_the_published_table(table: published.Table) -> None:
    extra = [s.run_id for s, b in plans(table) if not any(fills(c, s, b) for c in table.cells)]
    assert not extra, f"{table.key}: runs the published table does not have: {extra}"


def test_adamwprune_gpt2_budgets_and_late_schedule() -> None:
    cfg = load("gpt2-adamwprune-bitter")
    # s(t) = s_final * ((t - t_w) / (T - t_w))^3: from the warm-up's end t_w to the end of training T.
    # Every method, bitter2/3/4's longer runs included, ramps from the same t_w to its own T.
    assert cfg["PRUNING_SCHEDULE"] == "late"
    specs = matrix.expand(cfg).runs
    for cell in published.ADAMWPRUNE_GPT2.cells:
        (spec,) = [s for s in specs if fills(cell, s, cfg["ADAMWPRUNE_BASE"])]
        steps = run_budget(spec).steps
        assert steps == cell.iterations, cell.row
        settings = PRUNERS[spec.axes["pruning"]].Settings.from_config(spec.cfg, spec.axes)
        schedule = settings.schedule.build(settings.target, steps)
        assert (schedule.kind, schedule.start, schedule.end) == ("late", cfg["LR_WARMUP_STEPS"], steps), cell.row
    assert sorted(c.iterations for c in published.ADAMWPRUNE_GPT2.cells) == [10_000] * 3 + [12_100] + [13_000] * 2


def test_resnet50_adamwspam_base_uses_spam_theta_50_and_magnitude() -> None:
    cfg = load("resnet50-adamwspam-vs-adamwprune")
    assert cfg["SPAM_THRESHOLD"] == 50.0
    assert cfg["ADAMWPRUNE_BASE"] == "adamwspam"
    assert not cfg["PRUNING_MOVEMENT"] and cfg["PRUNING_MAGNITUDE"]
    assert load("resnet50-adamwprune-adamw-base")["ADAMWPRUNE_BASE"] == "adamw"


@pytest.mark.parametrize("name", ["lenet5", "lenet5-adamwprune", "lenet5-sgd"])
def test_lenet5_defconfigs_train_on_mnist_as_published(name: str) -> None:
    assert load(name)["IMAGE_DATASET"] == "mnist"


def test_the_fashion_mnist_variant_keeps_its_own_name() -> None:
    assert load("lenet5-fashion-mnist")["IMAGE_DATASET"] == "fashion_mnist"


PUBLISHED = {f"{v:.2f}" for t in published.TABLES for v in t.published()}
FIGURE = re.compile(r"\b\d{2}\.\d{1,2}\b")  # an accuracy or perplexity figure: 42.82, 90.3, 92.0
QUOTING = sorted({n for t in REPRODUCTIONS for n in t.defconfigs} | {"resnet18-movement-pruning-compare"})
QUOTING += ["resnet18-state-pruning-compare", "resnet18-cifar10", "resnet50-cifar100"]


@pytest.mark.parametrize("name", QUOTING)
def test_descriptions_quote_published_figures_only(name: str) -> None:
    description = load(name)["MATRIX_DESCRIPTION"]
    figures = FIGURE.findall(description)
    assert all(f"{float(f):.2f}" in PUBLISHED for f in figures), f"defconfigs/{name} quotes {figures}"


@pytest.mark.parametrize("table", REPRODUCTIONS, ids=lambda t: t.key)
def test_descriptions_quote_every_published_figure_of_their_cells(table: published.Table) -> None:
    text = " ".join(load(n)["MATRIX_DESCRIPTION"] for n in table.defconfigs)
    quoted = {f"{float(f):.2f}" for f in FIGURE.findall(text)}
    missing = {f"{v:.2f}" for v in table.published()} - quoted
    assert not missing, f"{table.key}: the descriptions of {table.defconfigs} do not quote {sorted(missing)}"


@pytest.mark.parametrize("name", sorted({n for t in REPRODUCTIONS for n in t.defconfigs}))
def test_adamwprune_trains_at_the_learning_rate_of_what_it_is_compared_with(name: str) -> None:
    """No lr axis: AdamWPrune takes its base optimizer's learning rate (ADAMWPRUNE_BASE's ``*_LR``), the one the
    base's own runs in the same table use, so the published pairs differ in pruning only."""
    cfg = load(name)
    assert not cfg["LEARNING_RATES"], f"defconfigs/{name} sweeps the learning rate; the published tables do not"
