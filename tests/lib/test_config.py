"""The one configuration loader (lib.config): typed values, strictness, overrides and the Kconfig tree's rules.

Every test writes a small .config into tmp_path and loads it with the real Kconfig tree.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import kconfiglib
import pytest

from lib import config as cfgmod
from lib import config_types
from lib.config import Config, load, split_overrides
from lib.errors import UserError

# A .config with one of each kind of value set away from its default.
TYPED = """\
CONFIG_OPTIMIZER_SGD=y
CONFIG_SGD_LR="0.1"
CONFIG_SGD_MOMENTUM="0.8"
# CONFIG_SGD_NESTEROV is not set
CONFIG_SGD_WEIGHT_DECAY="0"
CONFIG_PRUNING_MAGNITUDE=y
CONFIG_TARGET_SPARSITIES="0.5 0.9"
CONFIG_PRUNING_SCOPE_LAYER=y
CONFIG_LENET5_POOL_AVG=y
CONFIG_IMAGE_DATASET_FASHION_MNIST=y
CONFIG_LR_MIN_RATIO="1"
CONFIG_SEEDS="0 1"
CONFIG_MATRIX_NAME="my-matrix_1.2"
CONFIG_MATRIX_DESCRIPTION="dense vs 50% and 90%"
CONFIG_EPOCHS=3
CONFIG_DEVICE_CPU=y
CONFIG_TRACKER_WANDB=y
CONFIG_TRACKER_PROJECT="proj"
CONFIG_DATA_DIR="/tmp/data dir"
"""

FIX = "make menuconfig"


def write(tmp_path: Path, text: str, name: str = ".config") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_text(tmp_path: Path, text: str = "", overrides: tuple[str, ...] | list[str] = ()) -> Config:
    return load(write(tmp_path, text), overrides)


def load_error(tmp_path: Path, text: str = "", overrides: tuple[str, ...] | list[str] = ()) -> str:
    with pytest.raises(UserError) as info:
        load_text(tmp_path, text, overrides)
    message = str(info.value)
    assert "\n" not in message, "a user error is one line"
    return message


# --------------------------------------------------------------------------- typed values


def test_typed_values(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, TYPED)
    assert cfg["OPTIMIZER_SGD"] is True
    assert cfg["OPTIMIZER_ADAM"] is False
    assert cfg["SGD_NESTEROV"] is False
    assert cfg["EPOCHS"] == 3 and type(cfg["EPOCHS"]) is int
    assert cfg["SGD_LR"] == 0.1 and type(cfg["SGD_LR"]) is float
    assert cfg["SGD_MOMENTUM"] == 0.8
    assert cfg["SGD_WEIGHT_DECAY"] == 0.0
    assert cfg["LR_MIN_RATIO"] == 1.0  # the closed end of [0, 1]
    assert cfg["TARGET_SPARSITIES"] == (0.5, 0.9)
    assert cfg["SEEDS"] == (0, 1)
    assert cfg["MATRIX_NAME"] == "my-matrix_1.2"
    assert cfg["MATRIX_DESCRIPTION"] == "dense vs 50% and 90%"
    assert cfg["DATA_DIR"] == "/tmp/data dir"
    assert cfg["TRACKER_PROJECT"] == "proj"
    # named choices -> the lower-case suffix of the selected member
    assert cfg["LENET5_POOL"] == "avg"
    assert cfg["LENET5_ACTIVATION"] == "relu"
    assert cfg["IMAGE_DATASET"] == "fashion_mnist"
    assert cfg["PRUNING_SCOPE"] == "layer"
    assert cfg["DEVICE"] == "cpu"
    assert cfg["TRACKER_WANDB"] is True and cfg["TRACKER_TRACKIO"] is False and cfg["TRACKING"] is True
    assert cfg["LR_SCHEDULE"] == "cosine"
    # choice members stay readable as bools
    assert cfg["LENET5_POOL_AVG"] is True and cfg["LENET5_POOL_MAX"] is False
    # the promptless helper follows its `select`
    assert cfg["PRUNING_SPARSE"] is True


def test_defaults_of_an_empty_config(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "")
    assert cfg["MODEL_LENET5"] is True
    assert cfg["OPTIMIZER_ADAMW"] is True and cfg["OPTIMIZER_SGD"] is False
    assert cfg["ADAMW_LR"] == 1e-3
    assert cfg["ADAMW_WEIGHT_DECAY"] == 0.01
    assert cfg["ADAM_EPS"] == 1e-8
    assert cfg["PRUNING_NONE"] is True and cfg["PRUNING_MAGNITUDE"] is False and cfg["PRUNING_SPARSE"] is False
    assert cfg["EPOCHS"] == 10
    assert cfg["SEEDS"] == (0,)
    assert cfg["MATRIX_NAME"] == "default"
    assert cfg["MATRIX_DESCRIPTION"] == ""
    assert cfg["LENET5_POOL"] == "max"
    assert cfg["IMAGE_DATASET"] == "digits"
    assert cfg["DEVICE"] == "auto"
    assert cfg["TRACKER_TRACKIO"] is False and cfg["TRACKER_WANDB"] is False and cfg["TRACKING"] is False
    # symbols whose dependency is unmet have no value
    assert cfg["SGD_LR"] is None
    assert cfg["TARGET_SPARSITIES"] is None
    assert cfg["TRACKER_PROJECT"] is None


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, TYPED)
    with pytest.raises(TypeError):
        cfg["EPOCHS"] = 5  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.values["EPOCHS"] = 5  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.values = {}  # type: ignore[misc]
    assert cfg["EPOCHS"] == 3
    assert isinstance(cfg["SEEDS"], tuple)


def test_config_unknown_key_suggests_close_names(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "")
    with pytest.raises(KeyError, match="TARGET_SPARSITY.*TARGET_SPARSITIES"):
        cfg["TARGET_SPARSITY"]
    assert "EPOCHS" in cfg and "EPOCH" not in cfg


def test_config_json_round_trip(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, TYPED)
    data = cfg.to_json()
    assert data["TARGET_SPARSITIES"] == [0.5, 0.9]
    assert data["SEEDS"] == [0, 1]
    again = Config.from_json(data)
    assert dict(again.values) == dict(cfg.values)
    assert again["SEEDS"] == (0, 1)


def test_float_text_is_stripped_and_exponents_parse(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, 'CONFIG_OPTIMIZER_SGD=y\nCONFIG_SGD_LR=" 2e-2 "\n')
    assert cfg["SGD_LR"] == 0.02


def test_escaped_quotes_in_a_string(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, 'CONFIG_MATRIX_DESCRIPTION="say \\"hi\\" \\\\ back"\n')
    assert cfg["MATRIX_DESCRIPTION"] == 'say "hi" \\ back'


def test_assignment_order_in_a_file_does_not_matter(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, 'CONFIG_SGD_LR="0.1"\nCONFIG_OPTIMIZER_SGD=y\n')
    assert cfg["SGD_LR"] == 0.1


@pytest.mark.parametrize("value", [1, 100000])
def test_int_range_ends_are_allowed(tmp_path: Path, value: int) -> None:
    assert load_text(tmp_path, f"CONFIG_EPOCHS={value}\n")["EPOCHS"] == value


# --------------------------------------------------------------------------- errors in files


def test_unknown_symbol_suggests_close_match(tmp_path: Path) -> None:
    message = load_error(tmp_path, 'CONFIG_TARGET_SPARSITY="0.5"\n')
    assert "unknown Kconfig symbol TARGET_SPARSITY;" in message
    assert "did you mean TARGET_SPARSITIES, ONESHOT_SPARSITIES?" in message
    assert str(tmp_path / ".config") in message


@pytest.mark.parametrize("old", ["LENET5_DATASET_MNIST", "RESNET_DATASET_MNIST"])
def test_a_renamed_dataset_symbol_names_its_new_name(tmp_path: Path, old: str) -> None:
    message = load_error(tmp_path, f"CONFIG_MODEL_LENET5=y\nCONFIG_{old}=y\n")
    assert message == (
        f"{tmp_path / '.config'}: {old} is now IMAGE_DATASET_MNIST (one image dataset choice for every model); "
        "write IMAGE_DATASET_MNIST instead, or choose the dataset again in `make menuconfig`"
    )


def test_a_run_recorded_before_the_dataset_rename_reads_under_the_new_names() -> None:
    """config.json of a ResNet run written when each model had its own dataset choice (and the LeNet-5 one was
    in the same config): the ResNet choice becomes IMAGE_DATASET, the LeNet-5 one is dropped."""
    from lib.matrix import expand
    from lib.spec import RunSpec

    spec = expand(cfgmod.from_defaults(["MODEL_LENET5=n", "MODEL_RESNET18=y", "IMAGE_DATASET=mnist"])).runs[0]
    now = spec.to_json()
    old = {k: v for k, v in now["values"].items() if not k.startswith("IMAGE_DATASET")}
    for prefix, chosen in (("RESNET_DATASET", "mnist"), ("LENET5_DATASET", "cifar10")):
        old[prefix] = chosen
        for name in ("DIGITS", "MNIST", "FASHION_MNIST", "CIFAR10", "CIFAR100"):
            old[f"{prefix}_{name}"] = name.lower() == chosen
    recorded = RunSpec.from_json({**now, "values": old})
    assert recorded.cfg["IMAGE_DATASET"] == "mnist" and recorded.cfg["IMAGE_DATASET_MNIST"] is True
    assert not any(k.startswith(("RESNET_DATASET", "LENET5_DATASET")) for k in recorded.cfg.values)
    assert recorded.to_json() == now


def test_a_run_recorded_before_a_symbol_existed_reads_it_at_its_default() -> None:
    """config.json written before MEMORY_SAMPLE_MS and the tracker bools existed: `make continue` and the report
    read those symbols at their defaults instead of failing on a missing key."""
    from lib.matrix import expand
    from lib.spec import RunSpec

    spec = expand(cfgmod.from_defaults(["MEMORY_SAMPLE_MS=250"])).runs[0]
    now = spec.to_json()
    old = {k: v for k, v in now["values"].items() if k not in ("MEMORY_SAMPLE_MS", "TRACKER_WANDB")}
    recorded = RunSpec.from_json({**now, "values": old})
    assert recorded.cfg["MEMORY_SAMPLE_MS"] == cfgmod.from_defaults([])["MEMORY_SAMPLE_MS"] == 1000
    assert recorded.cfg["TRACKER_WANDB"] is False
    assert RunSpec.from_json(now).cfg["MEMORY_SAMPLE_MS"] == 250  # a recorded value is never replaced


def test_a_run_recorded_before_a_knob_changed_the_behaviour_goes_on_as_it_started() -> None:
    """Movement pruning froze pruned weights and bitter3 trained the base budget before their knobs existed:
    a run recorded then resumes with those, not with today's defaults (Sanh's revival, 1.30 x budget)."""
    from lib.matrix import expand
    from lib.pruning import PRUNERS
    from lib.spec import RunSpec

    overrides = ["OPTIMIZER_ADAMWPRUNE=y", "ADAMWPRUNE_VARIANTS=bitter3", "PRUNING_MOVEMENT=y", "OPTIMIZER_SGD=n"]
    runs = {(s.axes["optimizer"], s.axes["pruning"]): s for s in expand(cfgmod.from_defaults(overrides)).runs}
    for key, symbols in {
        ("adamw", "movement"): ["PRUNING_MOVEMENT_FROZEN"],
        ("adamwprune", "state"): ["ADAMWPRUNE_BUDGET_SCALE_LONG", "ADAMWPRUNE_WEIGHT_ATTENTION"],
    }.items():
        now = runs[key].to_json()
        old = RunSpec.from_json({**now, "values": {k: v for k, v in now["values"].items() if k not in symbols}})
        settings = PRUNERS[key[1]].Settings.from_config(old.cfg, old.axes)
        fresh = PRUNERS[key[1]].Settings.from_config(runs[key].cfg, runs[key].axes)
        if key[1] == "movement":
            assert settings.frozen is True and fresh.frozen is False
        else:
            assert settings.budget_scale == 1.0 and fresh.budget_scale == 1.3


def test_unknown_symbol_without_close_match(tmp_path: Path) -> None:
    message = load_error(tmp_path, "CONFIG_QWERTYUIOP=y\n")
    assert "unknown Kconfig symbol QWERTYUIOP" in message
    assert "make menuconfig" in message


@pytest.mark.parametrize(
    ("text", "symbol", "allowed"),
    [
        ("CONFIG_EPOCHS=0\n", "EPOCHS=0", "1..100000"),
        ("CONFIG_EPOCHS=100001\n", "EPOCHS=100001", "1..100000"),
        ("CONFIG_JOBS=0\n", "JOBS=0", "1..1024"),
        ("CONFIG_PRUNING_MAGNITUDE=y\nCONFIG_PRUNING_START_PERCENT=101\n", "PRUNING_START_PERCENT=101", "0..100"),
    ],
)
def test_int_out_of_range_names_the_range(tmp_path: Path, text: str, symbol: str, allowed: str) -> None:
    message = load_error(tmp_path, text)
    assert f"{symbol} did not take effect (the allowed range is {allowed})" in message
    assert FIX in message


def test_int_that_is_not_a_number(tmp_path: Path) -> None:
    message = load_error(tmp_path, "CONFIG_MODEL_GPT2=y\nCONFIG_GPT2_MAX_ITERS=abc\n")
    assert message == (
        f"{tmp_path / '.config'}: GPT2_MAX_ITERS=abc: GPT2_MAX_ITERS takes an integer in 1..1000000000; "
        "correct or remove that line (`make menuconfig` rewrites the file)"
    )


def test_int_with_leading_zero(tmp_path: Path) -> None:
    assert load_text(tmp_path, "CONFIG_EPOCHS=010\n")["EPOCHS"] == 10


@pytest.mark.parametrize(
    ("text", "symbol", "dependency"),
    [
        ('CONFIG_SGD_LR="0.1"\n', "SGD_LR=0.1", "OPTIMIZER_SGD"),
        (
            'CONFIG_ADAM_LR="0.1"\n',
            "ADAM_LR=0.1",
            "ADAM_USED (ADAM_USED is set by OPTIMIZER_ADAM || ADAMWPRUNE_BASE_ADAM)",
        ),
        (
            'CONFIG_LR_SCHEDULE_CONSTANT=y\nCONFIG_LR_MIN_RATIO="0.1"\n',
            "LR_MIN_RATIO=0.1",
            "LR_ANNEALS (LR_ANNEALS is set by OPTIMIZER_ADAMWADV || ADAMWPRUNE_BASE_ADAMWADV || LR_SCHEDULE_COSINE || "
            "LR_SCHEDULE_WSD || LR_SCHEDULE_ONECYCLE)",
        ),
        (
            'CONFIG_TRACKER_PROJECT="p"\n',
            "TRACKER_PROJECT=p",
            "TRACKING (TRACKING is set by TRACKER_TRACKIO || TRACKER_WANDB)",
        ),
    ],
)
def test_value_with_unmet_dependency(tmp_path: Path, text: str, symbol: str, dependency: str) -> None:
    message = load_error(tmp_path, text)
    assert f"{symbol} did not take effect (it depends on {dependency}, which is not met)" in message


def test_promptless_helper_in_a_file_is_derived_not_an_error(tmp_path: Path) -> None:
    # kconfiglib itself writes promptless helpers to .config; their value always follows the selects.
    assert load_text(tmp_path, "CONFIG_PRUNING_SPARSE=y\n")["PRUNING_SPARSE"] is False
    assert load_text(tmp_path, "CONFIG_PRUNING_MAGNITUDE=y\n")["PRUNING_SPARSE"] is True


def test_promptless_symbol_cannot_be_overridden(tmp_path: Path) -> None:
    message = load_error(tmp_path, "", ["PRUNING_SPARSE=y"])
    assert "PRUNING_SPARSE=y did not take effect" in message
    assert "no prompt" in message


def test_second_choice_member_does_not_stick(tmp_path: Path) -> None:
    message = load_error(tmp_path, "CONFIG_LENET5_POOL_AVG=y\nCONFIG_LENET5_POOL_MAX=y\n")
    assert "LENET5_POOL_AVG=y did not take effect" in message
    assert "member of choice LENET5_POOL" in message


def test_choice_member_not_set_is_fine(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "# CONFIG_DEVICE_CUDA is not set\nCONFIG_DEVICE_CPU=y\n")
    assert cfg["DEVICE"] == "cpu"


def test_duplicate_assignment(tmp_path: Path) -> None:
    message = load_error(tmp_path, "CONFIG_EPOCHS=3\nCONFIG_EPOCHS=4\n")
    assert "EPOCHS" in message and "more than once" in message


@pytest.mark.parametrize("line", ["garbage line", "CONFIG_EPOCHS"])
def test_malformed_line(tmp_path: Path, line: str) -> None:
    message = load_error(tmp_path, f"CONFIG_EPOCHS=3\n{line}\n")
    assert "malformed line" in message
    assert repr(line) in message
    assert ":2:" in message  # the line number


SPARSITY = 'CONFIG_PRUNING_MAGNITUDE=y\nCONFIG_TARGET_SPARSITIES="{}"\n'


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("1.5", "1.5"),
        ("abc", "abc"),
        ("0", "0"),
        ("1", "1"),
        ("-0.5", "-0.5"),
        ("nan", "nan"),
        ("inf", "inf"),
        ("0.5 1.0", "1.0"),
    ],  # a list's error names the bad item
)
def test_bad_sparsity(tmp_path: Path, value: str, named: str) -> None:
    message = load_error(tmp_path, SPARSITY.format(value))
    assert f"TARGET_SPARSITIES={named!r} is not allowed" in message
    assert "each a number in (0, 1)" in message
    assert FIX in message


def test_empty_sparsity(tmp_path: Path) -> None:
    message = load_error(tmp_path, SPARSITY.format(""))
    assert "TARGET_SPARSITIES is empty" in message
    assert "(0, 1)" in message


def test_repeated_sparsity(tmp_path: Path) -> None:
    message = load_error(tmp_path, SPARSITY.format("0.5 0.50"))
    assert "TARGET_SPARSITIES='0.5 0.50' repeats a value" in message


@pytest.mark.parametrize(
    ("symbol", "value", "allowed"),
    [
        ("SGD_LR", "-0.1", "a number > 0"),
        ("SGD_LR", "0", "a number > 0"),
        ("SGD_LR", "fast", "a number > 0"),
        ("SGD_LR", "", "a number > 0"),
        ("SGD_WEIGHT_DECAY", "-1e-4", "a number >= 0"),
        ("SGD_MOMENTUM", "1", "a number in [0, 1)"),
        ("SGD_MOMENTUM", "-0.1", "a number in [0, 1)"),
    ],
)
def test_bad_sgd_float(tmp_path: Path, symbol: str, value: str, allowed: str) -> None:
    message = load_error(tmp_path, f'CONFIG_OPTIMIZER_SGD=y\nCONFIG_{symbol}="{value}"\n')
    assert f"{symbol}={value!r} is not allowed: must be {allowed}" in message


@pytest.mark.parametrize(
    ("symbol", "value", "allowed"),
    [
        ("ADAMW_LR", "-1e-3", "a number > 0"),
        ("ADAM_BETA1", "1", "a number in [0, 1)"),
        ("ADAM_BETA2", "1.5", "a number in [0, 1)"),
        ("ADAM_EPS", "0", "a number > 0"),
        ("LR_MIN_RATIO", "1.01", "a number in [0, 1]"),
    ],
)
def test_bad_adam_float(tmp_path: Path, symbol: str, value: str, allowed: str) -> None:
    message = load_error(tmp_path, f'CONFIG_{symbol}="{value}"\n')
    assert f"{symbol}={value!r} is not allowed: must be {allowed}" in message


@pytest.mark.parametrize("value", ["0 0", "-1", "", "1.5", "a", "2147483648"])
def test_bad_seeds(tmp_path: Path, value: str) -> None:
    message = load_error(tmp_path, f'CONFIG_SEEDS="{value}"\n')
    assert f"SEEDS={value!r} is not allowed" in message
    assert "distinct integers in [0, 2147483647]" in message


@pytest.mark.parametrize("value", ["a/b", "latest", "", ".hidden", "-x", "a b", "../up"])
def test_bad_matrix_name(tmp_path: Path, value: str) -> None:
    message = load_error(tmp_path, f'CONFIG_MATRIX_NAME="{value}"\n')
    assert f"MATRIX_NAME={value!r} is not allowed" in message
    assert "not 'latest'" in message


@pytest.mark.parametrize("symbol", ["DATA_DIR", "RESULTS_DIR"])
def test_empty_directory_is_an_error(tmp_path: Path, symbol: str) -> None:
    message = load_error(tmp_path, f'CONFIG_{symbol}=""\n')
    assert f"{symbol} is empty" in message


def test_empty_tracker_project_is_derived(tmp_path: Path) -> None:
    assert load_text(tmp_path, 'CONFIG_TRACKER_TRACKIO=y\nCONFIG_TRACKER_PROJECT=""\n')["TRACKER_PROJECT"] == ""


@pytest.mark.parametrize("value", ["a/b", "-x", "a b", "p:1"])
def test_bad_tracker_project(tmp_path: Path, value: str) -> None:
    message = load_error(tmp_path, f'CONFIG_TRACKER_WANDB=y\nCONFIG_TRACKER_PROJECT="{value}"\n')
    assert f"TRACKER_PROJECT={value!r} is not allowed: use letters, digits, '.', '_' and '-'" in message


# What a .config written while the trackers were one choice says (every member is written).
OLD_TRACKER_LINES = {
    "none": "CONFIG_TRACKER_NONE=y\n# CONFIG_TRACKER_TRACKIO is not set\n# CONFIG_TRACKER_WANDB is not set\n",
    "trackio": "# CONFIG_TRACKER_NONE is not set\nCONFIG_TRACKER_TRACKIO=y\n# CONFIG_TRACKER_WANDB is not set\n",
}


@pytest.mark.parametrize(("old", "expected"), [("none", (False, False)), ("trackio", (True, False))])
def test_a_config_from_before_trackers_were_bools_still_loads(tmp_path: Path, old: str, expected) -> None:
    cfg = load_text(tmp_path, OLD_TRACKER_LINES[old])
    assert (cfg["TRACKER_TRACKIO"], cfg["TRACKER_WANDB"]) == expected


@pytest.mark.parametrize("override", ["TRACKER=wandb", "TRACKER_NONE=y"])
def test_an_override_of_the_tracker_choice_names_the_bools(tmp_path: Path, override: str) -> None:
    message = load_error(tmp_path, "", [override])
    name = override.partition("=")[0]
    assert message == f"override: {name} no longer exists: {cfgmod.RETIRED[name]}"
    assert "TRACKER_TRACKIO" in message and "TRACKER_WANDB" in message


def test_missing_file_points_at_defconfig(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load(tmp_path / "nope" / ".config")
    message = str(info.value)
    assert str(tmp_path / "nope" / ".config") in message
    assert "make defconfig" in message and "make list-defconfigs" in message


def test_load_file_missing_points_at_defconfig(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no such file; run `make defconfig`"):
        cfgmod.load_file(cfgmod.load_kconfig(), tmp_path / "nope")


def test_load_file_fills_a_kconfig(tmp_path: Path) -> None:
    kconf = cfgmod.load_kconfig()
    cfgmod.load_file(kconf, write(tmp_path, "CONFIG_EPOCHS=7\nCONFIG_DEVICE_CPU=y\n"))
    assert kconf.syms["EPOCHS"].str_value == "7"
    cfg = cfgmod.to_config(kconf)
    assert cfg["EPOCHS"] == 7 and cfg["DEVICE"] == "cpu"


def test_pruning_end_before_start(tmp_path: Path) -> None:
    text = "CONFIG_PRUNING_MAGNITUDE=y\nCONFIG_PRUNING_START_PERCENT=50\nCONFIG_PRUNING_END_PERCENT=40\n"
    message = load_error(tmp_path, text)
    assert "PRUNING_END_PERCENT=40 is before PRUNING_START_PERCENT=50" in message
    assert ">= the start" in message


def test_pruning_end_equal_to_start_is_fine(tmp_path: Path) -> None:
    text = "CONFIG_PRUNING_MAGNITUDE=y\nCONFIG_PRUNING_START_PERCENT=50\nCONFIG_PRUNING_END_PERCENT=50\n"
    cfg = load_text(tmp_path, text)
    assert cfg["PRUNING_START_PERCENT"] == cfg["PRUNING_END_PERCENT"] == 50


def test_nesterov_needs_momentum(tmp_path: Path) -> None:
    message = load_error(tmp_path, 'CONFIG_OPTIMIZER_SGD=y\nCONFIG_SGD_MOMENTUM="0"\n')
    assert "SGD_NESTEROV=y needs SGD_MOMENTUM > 0" in message
    cfg = load_text(tmp_path, 'CONFIG_OPTIMIZER_SGD=y\nCONFIG_SGD_MOMENTUM="0"\n# CONFIG_SGD_NESTEROV is not set\n')
    assert cfg["SGD_MOMENTUM"] == 0.0


# --------------------------------------------------------------------------- overrides


def test_overrides_change_values(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, "CONFIG_EPOCHS=3\n", ["EPOCHS=5", "OPTIMIZER_SGD=y", "SGD_LR=0.2", "SEEDS=3 4"])
    assert cfg["EPOCHS"] == 5
    assert cfg["OPTIMIZER_SGD"] is True
    assert cfg["SGD_LR"] == 0.2
    assert cfg["SEEDS"] == (3, 4)


def test_override_with_config_prefix_and_spaces(tmp_path: Path) -> None:
    assert load_text(tmp_path, "", ["CONFIG_EPOCHS=3"])["EPOCHS"] == 3
    assert load_text(tmp_path, "", [" EPOCHS=4"])["EPOCHS"] == 4


def test_last_override_wins(tmp_path: Path) -> None:
    assert load_text(tmp_path, "", ["EPOCHS=5", "EPOCHS=6"])["EPOCHS"] == 6


@pytest.mark.parametrize("item", ["EPOCHS", "=3", ""])
def test_override_without_equals(tmp_path: Path, item: str) -> None:
    message = load_error(tmp_path, "", [item])
    assert f"override {item!r} is not SYM=VALUE" in message
    assert "SET=" in message


def test_override_of_unknown_symbol(tmp_path: Path) -> None:
    message = load_error(tmp_path, "", ["TARGET_SPARSITY=0.5"])
    expected = "override: unknown Kconfig symbol TARGET_SPARSITY; did you mean TARGET_SPARSITIES, ONESHOT_SPARSITIES?"
    assert expected in message


@pytest.mark.parametrize("value", ["maybe", "1", "yes", ""])
def test_bool_override_needs_y_or_n(tmp_path: Path, value: str) -> None:
    message = load_error(tmp_path, "", [f"OPTIMIZER_SGD={value}"])
    assert f"override OPTIMIZER_SGD={value}: OPTIMIZER_SGD is a bool, give y or n" in message


@pytest.mark.parametrize("value", ["abc", "1.5", ""])
def test_int_override_must_be_an_integer(tmp_path: Path, value: str) -> None:
    message = load_error(tmp_path, "", [f"EPOCHS={value}"])
    assert message == (
        f"override EPOCHS={value}: EPOCHS takes an integer in 1..100000; "
        'fix it with `make menuconfig` or `make SET="SYM=VALUE"`'
    )


def test_int_override_of_a_symbol_whose_dependencies_are_unmet_names_its_range(tmp_path: Path) -> None:
    # MODEL_GPT2 is off, which turns GPT2_MAX_ITERS's range off too; the message gives the one it will have.
    message = load_error(tmp_path, "", ["GPT2_MAX_ITERS=abc"])
    assert message == (
        "override GPT2_MAX_ITERS=abc: GPT2_MAX_ITERS takes an integer in 1..1000000000; "
        'fix it with `make menuconfig` or `make SET="SYM=VALUE"`'
    )


TOY_KCONFIG = """\
config WIDE
\tbool "wide"

config LIMIT
\tint "limit"
\tdefault 10
\trange 1 100

config COUNT
\tint "count"
\tdefault 1
\trange 1 LIMIT if !WIDE
\trange 1 1000 if WIDE

config FREE
\tint "free"
\tdefault 0

config ADDRESS
\thex "address"
\tdefault 0x10
\trange 0x10 0xff

config GATE
\tbool "gate"

if GATE
config INNER
\tint "inner"
\tdefault 3
\trange 2 9
endif
"""


@pytest.mark.parametrize(
    ("overrides", "allowed"),
    [
        (["COUNT=x"], "COUNT takes an integer in 1..10"),  # a bound that is another symbol: its value
        (["LIMIT=20", "COUNT=x"], "COUNT takes an integer in 1..20"),
        (["WIDE=y", "COUNT=x"], "COUNT takes an integer in 1..1000"),  # the range whose condition holds
        (["FREE=x"], "FREE takes any integer"),
        (["ADDRESS=zz"], "ADDRESS takes a hexadecimal integer in 0x10..0xff"),
        (["INNER=x"], "INNER takes an integer in 2..9"),  # GATE is off: the range INNER has once it is on
    ],
)
def test_int_override_names_the_range_kconfiglib_applies(tmp_path: Path, overrides: list[str], allowed: str) -> None:
    kconfig = write(tmp_path, TOY_KCONFIG, "Kconfig")
    kconf = kconfiglib.Kconfig(str(kconfig), warn_to_stderr=False)
    with pytest.raises(UserError) as info:
        cfgmod.apply_overrides(kconf, overrides)
    bad = overrides[-1]
    assert str(info.value) == f"override {bad}: {allowed}; {cfgmod.FIX}"


def test_int_override_out_of_range(tmp_path: Path) -> None:
    message = load_error(tmp_path, "", ["JOBS=2000"])
    assert "JOBS=2000 did not take effect (the allowed range is 1..1024)" in message


def test_int_override_with_leading_zero(tmp_path: Path) -> None:
    assert load_text(tmp_path, "", ["EPOCHS=010"])["EPOCHS"] == 10


@pytest.mark.parametrize(("value", "expected"), [("cpu", "cpu"), ("CPU", "cpu"), ("cuda", "cuda"), ("auto", "auto")])
def test_named_choice_override(tmp_path: Path, value: str, expected: str) -> None:
    cfg = load_text(tmp_path, "CONFIG_DEVICE_MPS=y\n", [f"DEVICE={value}"])
    assert cfg["DEVICE"] == expected
    assert cfg[f"DEVICE_{expected.upper()}"] is True


def test_choice_member_override(tmp_path: Path) -> None:
    assert load_text(tmp_path, "", ["LENET5_POOL_AVG=y"])["LENET5_POOL"] == "avg"


@pytest.mark.parametrize("value", ["tpu", ""])
def test_named_choice_override_lists_allowed_values(tmp_path: Path, value: str) -> None:
    message = load_error(tmp_path, "", [f"DEVICE={value}"])
    assert f"override DEVICE={value}: allowed values are auto, cuda, mps, cpu" in message


def test_override_with_unmet_dependency(tmp_path: Path) -> None:
    message = load_error(tmp_path, "", ["SGD_LR=0.1"])
    assert "SGD_LR=0.1 did not take effect (it depends on OPTIMIZER_SGD, which is not met)" in message


def test_override_order_does_not_matter(tmp_path: Path) -> None:
    assert load_text(tmp_path, "", ["SGD_LR=0.1", "OPTIMIZER_SGD=y"])["SGD_LR"] == 0.1


def test_choice_override_with_unmet_dependency_names_it(tmp_path: Path) -> None:
    message = load_error(tmp_path, "# CONFIG_MODEL_LENET5 is not set\n", ["LENET5_POOL=avg"])
    assert "MODEL_LENET5" in message
    assert "<choice" not in message


def test_override_typed_string_is_validated(tmp_path: Path) -> None:
    message = load_error(tmp_path, "", ["PRUNING_MAGNITUDE=y", "TARGET_SPARSITIES=1.5"])
    assert "TARGET_SPARSITIES='1.5' is not allowed" in message and "(0, 1)" in message


def test_override_breaks_cross_symbol_rule(tmp_path: Path) -> None:
    message = load_error(tmp_path, "", ["PRUNING_MAGNITUDE=y", "PRUNING_START_PERCENT=50", "PRUNING_END_PERCENT=40"])
    assert "PRUNING_END_PERCENT=40 is before PRUNING_START_PERCENT=50" in message


# --------------------------------------------------------------------------- split_overrides


def test_split_overrides_quotes() -> None:
    assert split_overrides("A=1 B='x y'") == ["A=1", "B=x y"]
    assert split_overrides('SEEDS="0 1"  EPOCHS=2') == ["SEEDS=0 1", "EPOCHS=2"]
    assert split_overrides("") == []
    assert split_overrides("   ") == []


def test_split_overrides_unbalanced_quote() -> None:
    with pytest.raises(UserError, match=r"does not parse \(No closing quotation\); quote values with spaces"):
        split_overrides("A='unterminated")


def test_split_overrides_feed_load(tmp_path: Path) -> None:
    overrides = split_overrides("PRUNING_MAGNITUDE=y TARGET_SPARSITIES='0.25 0.75' SEEDS='3 4' DEVICE=cpu")
    cfg = load_text(tmp_path, "", overrides)
    assert cfg["TARGET_SPARSITIES"] == (0.25, 0.75)
    assert cfg["SEEDS"] == (3, 4)
    assert cfg["DEVICE"] == "cpu"


# --------------------------------------------------------------------------- the Kconfig tree's own rules


@pytest.fixture(scope="module")
def kconf() -> kconfiglib.Kconfig:
    return cfgmod.load_kconfig()


def test_every_string_symbol_has_a_type(kconf: kconfiglib.Kconfig) -> None:
    types = config_types.string_types(kconf)
    strings = {s.name for s in kconf.unique_defined_syms if s.orig_type == kconfiglib.STRING}
    assert strings, "the tree has string symbols"
    assert sorted(strings - set(types)) == [], "string symbols without a type"
    assert sorted(set(types) - strings) == [], "types of things that are not string symbols"


def test_each_subsystem_types_its_own_strings(kconf: kconfiglib.Kconfig) -> None:
    """Types are declared beside the Kconfig that defines the symbol, and every subsystem with floats has one."""
    declared = {p.relative_to(cfgmod.ROOT).as_posix() for p in cfgmod.ROOT.glob("**/" + config_types.DECLARATIONS)}
    assert {
        "lib/kconfig_types.py",
        "lib/optimizers/kconfig_types.py",
        "lib/pruning/kconfig_types.py",
        "models/gpt2/kconfig_types.py",
    } <= declared
    types = config_types.string_types(kconf)
    assert types["SGD_LR"] == config_types.POSITIVE and types["GPT2_DROPOUT"] == config_types.FRACTION


def test_every_string_default_is_valid(kconf: kconfiglib.Kconfig) -> None:
    types = config_types.string_types(kconf)
    for sym in kconf.unique_defined_syms:
        if sym.orig_type != kconfiglib.STRING:
            continue
        assert sym.defaults, f"{sym.name} has no default"
        for default, _cond in sym.defaults:
            types[sym.name].parse(sym.name, default.str_value)


def _tree(root: Path, declarations: dict[str, str]) -> kconfiglib.Kconfig:
    """A two-directory Kconfig tree under ``root`` (``sub/Kconfig`` defines RATE and NAME) with the given
    ``kconfig_types.py`` files (relative path -> contents)."""
    (root / "sub").mkdir()
    (root / "Kconfig").write_text('mainmenu "t"\nconfig TOP_INT\n\tint "n"\n\tdefault 1\nrsource "sub/Kconfig"\n')
    (root / "sub" / "Kconfig").write_text(
        'config RATE\n\tstring "rate"\n\tdefault "0.5"\nconfig NAME\n\tstring "name"\n\tdefault "x"\n'
    )
    for rel, text in declarations.items():
        (root / rel).write_text("from lib.config_types import FRACTION, Text\n" + text)
    return kconfiglib.Kconfig(str(root / "Kconfig"), warn_to_stderr=False)


def test_types_are_merged_from_beside_each_kconfig(tmp_path: Path) -> None:
    kconf = _tree(tmp_path, {"sub/kconfig_types.py": 'STRING_TYPES = {"RATE": FRACTION, "NAME": Text()}\n'})
    assert dict(config_types.string_types(kconf)) == {"RATE": config_types.FRACTION, "NAME": config_types.Text()}
    assert cfgmod.to_config(kconf)["RATE"] == 0.5


def test_an_undeclared_string_symbol_is_an_error(tmp_path: Path) -> None:
    kconf = _tree(tmp_path, {"sub/kconfig_types.py": 'STRING_TYPES = {"RATE": FRACTION}\n'})
    with pytest.raises(RuntimeError, match=r"string symbol NAME \(.*sub/Kconfig\) has no type: add it to STRING_TYPES"):
        cfgmod.to_config(kconf)


def test_a_type_declared_away_from_its_kconfig_is_an_error(tmp_path: Path) -> None:
    kconf = _tree(tmp_path, {"kconfig_types.py": 'STRING_TYPES = {"RATE": FRACTION, "NAME": Text()}\n'})
    with pytest.raises(RuntimeError, match="types RATE, which is not a string symbol of a Kconfig file in"):
        config_types.string_types(kconf)


def test_a_type_for_a_non_string_symbol_is_an_error(tmp_path: Path) -> None:
    kconf = _tree(tmp_path, {"kconfig_types.py": 'STRING_TYPES = {"TOP_INT": FRACTION}\n'})
    with pytest.raises(RuntimeError, match="types TOP_INT, which is not a string symbol"):
        config_types.string_types(kconf)


def test_every_prompted_item_has_help(kconf: kconfiglib.Kconfig) -> None:
    missing = [
        f"{node.item.name} ({node.filename}:{node.linenr})"
        for node in kconf.node_iter()
        if isinstance(node.item, (kconfiglib.Symbol, kconfiglib.Choice))
        and node.prompt
        and not (node.help or "").strip()
    ]
    assert missing == []


def test_every_int_has_a_range_and_a_default(kconf: kconfiglib.Kconfig) -> None:
    ints = [s for s in kconf.unique_defined_syms if s.orig_type == kconfiglib.INT]
    assert ints
    assert [s.name for s in ints if not s.ranges] == []
    assert [s.name for s in ints if not s.defaults] == []
    for sym in ints:
        for default, _cond in sym.defaults:
            for low, high, _rcond in sym.ranges:
                assert int(low.str_value) <= int(default.str_value) <= int(high.str_value), sym.name


def test_no_default_n(kconf: kconfiglib.Kconfig) -> None:
    assert [s.name for s in kconf.unique_defined_syms if any(d is kconf.n for d, _ in s.defaults)] == []


def test_choices_are_named_with_prefixed_members(kconf: kconfiglib.Kconfig) -> None:
    for choice in kconf.unique_choices:
        assert choice.name, f"unnamed choice at {choice.nodes[0].filename}:{choice.nodes[0].linenr}"
        for sym in choice.syms:
            assert sym.name.startswith(choice.name + "_"), (choice.name, sym.name)
