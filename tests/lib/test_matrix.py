"""Matrix expansion (lib.matrix): product size and order, the rules table, run ids and the printed plan."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lib import config as cfgmod
from lib.config import Config
from lib.errors import UserError
from lib.matrix import axes, expand, format_plan
from lib.model_registry import MODELS
from lib.optimizers import OPTIMIZERS
from lib.pruning import PRUNERS
from lib.spec import RunSpec

NONE_RULE = "pruning 'none' is dense: one run per optimizer and seed, not one per target sparsity"


def make_cfg(tmp_path: Path, *overrides: str) -> Config:
    """Defaults plus overrides."""
    return cfgmod.from_defaults(overrides)


def ids(cfg: Config) -> list[str]:
    return [r.run_id for r in expand(cfg).runs]


# 2 optimizers x (none + magnitude x 3 sparsities) x 2 seeds
SIXTEEN = (
    "OPTIMIZER_SGD=y",
    "PRUNING_MAGNITUDE=y",
    "TARGET_SPARSITIES=0.5 0.7 0.9",
    "SEEDS=0 1",
    "MATRIX_NAME=sixteen",
)


def test_sixteen_runs_in_order(tmp_path: Path) -> None:
    plan = expand(make_cfg(tmp_path, *SIXTEEN))
    expected = []
    for opt in ("sgd", "adamw"):
        expected += [f"lenet5-{opt}-none-seed0", f"lenet5-{opt}-none-seed1"]
        expected += [f"lenet5-{opt}-magnitude-s{s}-seed{seed}" for s in ("0.5", "0.7", "0.9") for seed in (0, 1)]
    assert [r.run_id for r in plan.runs] == expected
    assert len(plan.runs) == 16
    # 2 optimizers x 3 sparsities x 2 seeds of 'none' hit the rule, collapsing into 2 x 2 runs
    assert plan.notes == [f"{NONE_RULE} (12 cells)"]


def test_run_axes_and_config(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, *SIXTEEN)
    runs = {r.run_id: r for r in expand(cfg).runs}
    sparse = runs["lenet5-sgd-magnitude-s0.7-seed1"]
    assert sparse.axes == {
        "model": "lenet5",
        "attn_gate": None,  # GPT-2 axes: None for other models
        "attn_gate_pos": None,
        "attn_gate_act": None,
        "mlp_ratio": None,  # GPT-2 axes too
        "mla": None,
        "reciprocal": None,
        "kv_keep": None,
        "rmlp": None,
        "optimizer": "sgd",
        "variant": None,
        "pruning": "magnitude",
        "target_sparsity": 0.7,
        "fc1_band": None,  # banded widths: None for other methods
        "fc2_band": None,
        "lr": None,  # LEARNING_RATES empty: each optimizer's own rate
        "seed": 1,
    }
    assert sparse.matrix == "sixteen"
    assert sparse.cfg is cfg
    dense = runs["lenet5-adamw-none-seed0"]
    assert dense.axes == {
        "model": "lenet5",
        "attn_gate": None,
        "attn_gate_pos": None,
        "attn_gate_act": None,
        "mlp_ratio": None,  # GPT-2 axes too
        "mla": None,
        "reciprocal": None,
        "kv_keep": None,
        "rmlp": None,
        "optimizer": "adamw",
        "variant": None,
        "pruning": "none",
        "target_sparsity": 0.0,
        "fc1_band": None,
        "fc2_band": None,
        "lr": None,
        "seed": 0,
    }
    assert [a.name for a in axes()] == list(sparse.axes)


def test_single_sparse_run_id(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path,
        "OPTIMIZER_SGD=y",
        "OPTIMIZER_ADAMW=n",
        "PRUNING_NONE=n",
        "PRUNING_MAGNITUDE=y",
        "TARGET_SPARSITIES=0.7",
        "SEEDS=1",
    )
    assert ids(cfg) == ["lenet5-sgd-magnitude-s0.7-seed1"]
    assert expand(cfg).notes == []


def test_default_config_is_one_dense_run(tmp_path: Path) -> None:
    plan = expand(make_cfg(tmp_path))
    assert [r.run_id for r in plan.runs] == ["lenet5-adamw-none-seed0"]
    assert plan.notes == []


def test_optimizers_in_registry_order(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "OPTIMIZER_ADAM=y", "OPTIMIZER_SGD=y")
    assert ids(cfg) == ["lenet5-sgd-none-seed0", "lenet5-adam-none-seed0", "lenet5-adamw-none-seed0"]


def test_seeds_and_sparsities_keep_the_given_order(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "PRUNING_NONE=n", "PRUNING_MAGNITUDE=y", "TARGET_SPARSITIES=0.9 0.25", "SEEDS=3 1")
    assert ids(cfg) == [
        "lenet5-adamw-magnitude-s0.9-seed3",
        "lenet5-adamw-magnitude-s0.9-seed1",
        "lenet5-adamw-magnitude-s0.25-seed3",
        "lenet5-adamw-magnitude-s0.25-seed1",
    ]


def test_rule_does_not_fire_without_sparse_pruning(tmp_path: Path) -> None:
    plan = expand(make_cfg(tmp_path, "OPTIMIZER_SGD=y", "SEEDS=0 1 2"))
    assert len(plan.runs) == 6
    assert plan.notes == []


@pytest.mark.parametrize(
    ("overrides", "axis", "symbols"),
    [
        (
            ("OPTIMIZER_ADAMW=n",),
            "optimizer",
            "OPTIMIZER_SGD, OPTIMIZER_ADAM, OPTIMIZER_ADAMW, OPTIMIZER_ADAMWADV, "
            "OPTIMIZER_ADAMWSPAM, OPTIMIZER_ADAMWPRUNE, OPTIMIZER_MUON",
        ),
        (
            ("PRUNING_NONE=n",),
            "pruning",
            "PRUNING_NONE, PRUNING_MAGNITUDE, PRUNING_MOVEMENT, PRUNING_RANDOM, PRUNING_NM, PRUNING_BANDED, "
            "PRUNING_STATE",
        ),
        (("MODEL_LENET5=n",), "model", "MODEL_GPT2, MODEL_LENET5, MODEL_RESNET18, MODEL_RESNET50"),
    ],
)
def test_empty_axis(tmp_path: Path, overrides: tuple[str, ...], axis: str, symbols: str) -> None:
    cfg = make_cfg(tmp_path, *overrides)
    with pytest.raises(UserError) as info:
        expand(cfg)
    assert str(info.value) == (f"the {axis} axis is empty: select at least one of {symbols}; use `make menuconfig`")


def test_format_plan(tmp_path: Path) -> None:
    plan = expand(make_cfg(tmp_path, *SIXTEEN))
    text = format_plan(plan, "results/sixteen")
    lines = text.splitlines()
    assert lines[0] == "matrix results/sixteen"
    assert lines[-1] == "16 runs"
    assert lines[-2] == f"rule: {NONE_RULE} (12 cells)"
    run_lines = lines[1:-2]
    assert [line.split()[0] for line in run_lines] == [r.run_id for r in plan.runs]
    assert run_lines[2].split()[1:] == [
        "model=lenet5",
        "optimizer=sgd",
        "pruning=magnitude",
        "target_sparsity=0.5",
        "seed=0",
    ]
    # ids are padded to one column
    assert len({line.index("model=") for line in run_lines}) == 1


def test_format_plan_single_run(tmp_path: Path) -> None:
    text = format_plan(expand(make_cfg(tmp_path)), "results/default")
    assert re.fullmatch(r"1 runs?", text.splitlines()[-1])
    assert len(text.splitlines()) == 3


def test_run_ids_are_unique_directory_names(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path,
        "OPTIMIZER_SGD=y",
        "OPTIMIZER_ADAM=y",
        "PRUNING_MAGNITUDE=y",
        "TARGET_SPARSITIES=0.1 0.25 0.5 0.75 0.95 0.99",
        "SEEDS=0 1 2",
    )
    run_ids = ids(cfg)
    assert len(run_ids) == 3 * (1 + 6) * 3
    assert len(set(run_ids)) == len(run_ids)
    for run_id in run_ids:
        assert re.fullmatch(r"[a-z0-9][a-z0-9._-]*", run_id), run_id


def test_close_sparsities_get_distinct_run_ids(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "PRUNING_NONE=n", "PRUNING_MAGNITUDE=y", "TARGET_SPARSITIES=0.1234567 0.1234568")
    run_ids = ids(cfg)
    assert len(run_ids) == 2
    assert len(set(run_ids)) == 2


def test_runspec_json_round_trip(tmp_path: Path) -> None:
    for run in expand(make_cfg(tmp_path, *SIXTEEN)).runs:
        again = RunSpec.from_json(run.to_json())
        assert again == run
        assert dict(again.cfg.values) == dict(run.cfg.values)


def test_registries_match_kconfig() -> None:
    kconf = cfgmod.load_kconfig()
    for registry in (MODELS, OPTIMIZERS, PRUNERS):
        for name in registry.names():
            sym = kconf.syms.get(registry.symbol(name))
            assert sym is not None and sym.nodes, f"{registry.symbol(name)} is not in Kconfig"
            assert sym.nodes[0].prompt, f"{sym.name} has no prompt"


def test_matrix_exclude_drops_matching_runs_and_says_how_many(tmp_path: Path) -> None:
    plan = expand(make_cfg(tmp_path, *SIXTEEN, "MATRIX_EXCLUDE=*-s0.9-* lenet5-sgd-*seed1"))
    ids = {r.run_id for r in plan.runs}
    assert not any("-s0.9-" in i for i in ids) and not any(i.startswith("lenet5-sgd-") and "seed1" in i for i in ids)
    assert len(ids) == 16 - 4 - 3  # 0.9: 2 optimizers x 2 seeds; sgd seed 1: none, 0.5, 0.7 (0.9 already gone)
    assert "MATRIX_EXCLUDE '*-s0.9-*' (4 runs)" in plan.notes


@pytest.mark.parametrize(
    "pattern,message",
    [("*resnet*", "matches no run (the runs: lenet5-"), ("*", "removes every run")],
)
def test_matrix_exclude_errors(tmp_path: Path, pattern: str, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        expand(make_cfg(tmp_path, *SIXTEEN, f"MATRIX_EXCLUDE={pattern}"))


def test_gate_axes_apply_to_gpt2_only(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path,
        "MODEL_GPT2=y",
        "ATTN_GATE_HEADWISE=y",
        "ATTN_GATE_POS_VALUE=y",
        "ATTN_GATE_ACT_NS_SIGMOID=y",
        "MATRIX_NAME=gates",
    )
    runs = {r.run_id: r.axes for r in expand(cfg).runs}
    # lenet5: one ungated run; gpt2: ungated + headwise x {sdpa, value} x {sigmoid, ns_sigmoid}
    assert len(runs) == 1 + 1 + 4
    assert runs["lenet5-adamw-none-seed0"]["attn_gate"] is None
    assert runs["gpt2-adamw-none-seed0"]["attn_gate"] == "none"
    assert runs["gpt2-headwisegate-atvalue-ns_sigmoid-adamw-none-seed0"]["attn_gate_pos"] == "value"


BANDS = (
    "MODEL_LENET5=n",
    "MODEL_GPT2=y",
    "PRUNING_BANDED=y",
    "BANDED_FC1_BANDWIDTHS=0 1024 512 256",
    "BANDED_FC2_BANDWIDTHS=0 1024 512 256",
    "MATRIX_NAME=bands",
)


def _bands(cfg: Config) -> set[tuple]:
    return {(r.axes["pruning"], r.axes["fc1_band"], r.axes["fc2_band"]) for r in expand(cfg).runs}


def test_banded_baseline_fc1_fc2_and_both_is_ten_runs(tmp_path: Path) -> None:
    cells = _bands(make_cfg(tmp_path, *BANDS))
    widths = (1024, 512, 256)
    expected = {("none", None, None)}
    expected |= {("banded", w, 0) for w in widths} | {("banded", 0, w) for w in widths}
    expected |= {("banded", w, w) for w in widths}
    assert cells == expected and len(cells) == 10
    ids = {r.run_id for r in expand(make_cfg(tmp_path, *BANDS)).runs}
    assert "gpt2-adamw-banded-fc1b512-fc2b512-seed0" in ids and "gpt2-adamw-banded-fc2b256-seed0" in ids


def test_banded_full_grid_is_every_pair(tmp_path: Path) -> None:
    cells = _bands(make_cfg(tmp_path, *BANDS, "BANDED_FULL_GRID=y"))
    assert len(cells) == 1 + 4 * 4 - 1  # dense + every (fc1, fc2) pair but (0, 0)
    assert ("banded", 1024, 256) in cells and ("banded", 256, 1024) in cells


def test_learning_rates_are_an_axis_named_in_ids_when_several(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, "LEARNING_RATES=0.0036 0.00396", "SEEDS=0")
    runs = expand(cfg).runs
    assert [r.run_id for r in runs] == ["lenet5-adamw-none-lr0.0036-seed0", "lenet5-adamw-none-lr0.00396-seed0"]
    assert [r.axes["lr"] for r in runs] == [0.0036, 0.00396]
    (single,) = expand(make_cfg(tmp_path, "LEARNING_RATES=0.01")).runs
    assert single.run_id == "lenet5-adamw-none-seed0" and single.axes["lr"] == 0.01


@pytest.mark.parametrize("value", ["0", "-1e-3", "fast", "0.1 0.1"])
def test_bad_learning_rates_are_one_clear_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(UserError, match="LEARNING_RATES="):
        make_cfg(tmp_path, f"LEARNING_RATES={value}")


ADAMWPRUNE_PAIRS = (
    "OPTIMIZER_ADAMWPRUNE=y",
    "ADAMWPRUNE_VARIANTS=bitter0 bitter2",
    "PRUNING_MAGNITUDE=y",
    "TARGET_SPARSITIES=0.5",
)
VARIANT_RULE = "AdamWPrune variants apply to the adamwprune optimizer only"
PAIR_RULE = "adamwprune prunes with its own moments: it runs with pruning 'state', or 'none' for its dense baseline"
DENSE_RULE = "adamwprune with pruning 'none' is its base optimizer, dense: set ADAMWPRUNE_DENSE_BASELINE to run it"
ONE_DENSE_RULE = "the dense AdamWPrune baseline scores nothing: one run, not one per variant"
STATE_RULE = "pruning 'state' reads AdamWPrune's moments: it runs with optimizer adamwprune only"


def test_adamwprune_pairs_with_state_and_drops_its_dense_run_unless_asked(tmp_path: Path) -> None:
    # 2 optimizers x 2 variants x (none, magnitude, state): 12 cells
    plan = expand(make_cfg(tmp_path, *ADAMWPRUNE_PAIRS))
    assert [r.run_id for r in plan.runs] == [
        "lenet5-adamw-none-seed0",
        "lenet5-adamw-magnitude-s0.5-seed0",
        "lenet5-adamwprune-bitter0-state-s0.5-seed0",
        "lenet5-adamwprune-bitter2-state-s0.5-seed0",
    ]
    assert plan.notes == [
        f"{VARIANT_RULE} (6 cells)",  # every adamw cell
        f"{NONE_RULE} (2 cells)",  # adamw none, once per (collapsed) variant
        f"{STATE_RULE} (2 cells)",
        f"{DENSE_RULE} (2 cells)",  # adamwprune none, once per variant
        f"{PAIR_RULE} (2 cells)",  # adamwprune magnitude
    ]


def test_adamwprune_dense_baseline_is_one_run_without_a_variant(tmp_path: Path) -> None:
    plan = expand(make_cfg(tmp_path, *ADAMWPRUNE_PAIRS, "ADAMWPRUNE_DENSE_BASELINE=y"))
    assert [r.run_id for r in plan.runs] == [
        "lenet5-adamw-none-seed0",
        "lenet5-adamw-magnitude-s0.5-seed0",
        "lenet5-adamwprune-none-seed0",
        "lenet5-adamwprune-bitter0-state-s0.5-seed0",
        "lenet5-adamwprune-bitter2-state-s0.5-seed0",
    ]
    dense = plan.runs[2].axes
    assert (dense["optimizer"], dense["variant"], dense["pruning"], dense["target_sparsity"]) == (
        "adamwprune",
        None,
        "none",
        0.0,
    )
    assert plan.notes == [
        f"{VARIANT_RULE} (6 cells)",
        f"{NONE_RULE} (4 cells)",  # adamw none and adamwprune none, each once per variant
        f"{STATE_RULE} (2 cells)",
        f"{ONE_DENSE_RULE} (2 cells)",
        f"{PAIR_RULE} (2 cells)",  # magnitude stays forbidden
    ]
    text = format_plan(plan, "results/pairs").splitlines()
    assert text[-6:] == [f"rule: {note}" for note in plan.notes] + ["5 runs"]
