"""The Makefile as a user runs it: `make help`, the defconfig targets, `make plan`, and hostile values.

Every call that reads or writes a .config points KCONFIG_CONFIG (or --config) into tmp_path, so the
repository's .config is never touched. make runs with the virtualenv these tests run in, and with the
environment's install stamp marked up to date (`-o`), so no test ever installs anything; the tests that need
the install recipe or must not run the real programs give make a virtualenv whose `python` only records its
arguments.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lib import config as cfgmod
from tests.helpers import HANG_GUARD_SECONDS

ROOT = cfgmod.ROOT
MAKEFILE = ROOT / "Makefile"
DEFCONFIG_NAMES = sorted(n for n in os.listdir(cfgmod.DEFCONFIGS) if not n.startswith("."))
VENV = Path(sys.prefix)
STAMP = ".sparsity-lab-installed"

pytestmark = [
    pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make"),
    pytest.mark.skipif(not os.access(VENV / "bin" / "python", os.X_OK), reason="tests must run in a virtualenv"),
]


def make(
    *args: str, env: dict[str, str] | None = None, timeout: float = HANG_GUARD_SECONDS
) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        # a parent `make test EPOCHS=3` passes its variables down through MAKEFLAGS; drop them
        if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "KCONFIG_CONFIG")
    }
    clean["VIRTUAL_ENV"] = str(VENV)
    clean.update(env or {})
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "-o", str(VENV / STAMP), *args],
        stdin=subprocess.DEVNULL,  # nothing ever waits for an answer
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean,
    )


def documented_targets() -> dict[str, str]:
    """``target: ... ## description`` lines of the Makefile."""
    targets = {}
    for line in MAKEFILE.read_text().splitlines():
        m = re.match(r"^([^\s:#=$.][^\s:=]*)\s*:(?!=).*?##\s*(.*)$", line)
        if m:
            targets[m.group(1)] = m.group(2).strip()
    return targets


def defined_targets() -> list[str]:
    """Every explicit rule's target, documented or not (not `$(VAR):` rules nor special `.TARGETS`)."""
    return [
        m.group(1)
        for line in MAKEFILE.read_text().splitlines()
        if (m := re.match(r"^([^\s:#=$.][^\s:=]*)\s*:(?!=)", line))
    ]


def phony_targets() -> set[str]:
    text = MAKEFILE.read_text().replace("\\\n", " ")
    return {t for m in re.finditer(r"^\.PHONY\s*:(.*)$", text, re.M) for t in m.group(1).split()}


# --------------------------------------------------------------------------- make help


def test_help_lists_every_target_once() -> None:
    targets = documented_targets()
    assert {"run", "plan", "menuconfig", "defconfig", "savedefconfig", "help"} <= set(targets)
    result = make("help")
    assert result.returncode == 0, result.stderr
    listed = [m.groups() for m in re.finditer(r"^  (\S+)\s+(.*)$", result.stdout, re.M)]
    assert [name for name, _ in listed] == list(targets), "one line per target, in Makefile order"
    for name, desc in listed:
        assert desc == targets[name]


def test_help_names_the_variables() -> None:
    header = re.split(r"^  \S", make("help").stdout, maxsplit=1, flags=re.M)[0]
    for var in ("EPOCHS=", "JOBS=", "SET=", "MATRIX=", "DEFCONFIG=", "KCONFIG_CONFIG="):
        assert var in header


def test_every_target_is_documented() -> None:
    assert sorted(set(defined_targets()) - set(documented_targets())) == []


def test_every_documented_target_is_phony() -> None:
    plain = {t for t in documented_targets() if "%" not in t}
    assert sorted(plain - phony_targets()) == []


# --------------------------------------------------------------------------- defconfig targets


def test_defconfig_unknown_name(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    result = make("defconfig", "DEFCONFIG=nope", f"KCONFIG_CONFIG={config}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"error: unknown defconfig 'nope'; valid names: {', '.join(DEFCONFIG_NAMES)}\n" in result.stderr
    assert not config.exists()


def test_defconfig_pattern_target(tmp_path: Path) -> None:
    config, reference = tmp_path / ".config", tmp_path / "reference"
    result = make("defconfig-quickstart", f"KCONFIG_CONFIG={config}")
    assert result.returncode == 0, result.stderr
    subprocess.run(
        [sys.executable, "-m", "lib.kconfig_cli", "--config", str(reference), "defconfig", "quickstart"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    assert config.read_bytes() == reference.read_bytes()


def test_list_defconfigs() -> None:
    result = make("list-defconfigs")
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == DEFCONFIG_NAMES


# --------------------------------------------------------------------------- plan


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    """A .config from defconfigs/quickstart: SGD + AdamW, none + magnitude at 0.5 and 0.9, seed 0."""
    config = tmp_path / ".config"
    subprocess.run(
        [sys.executable, "-m", "lib.kconfig_cli", "--config", str(config), "defconfig", "quickstart"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return config


def test_runner_plan(quickstart: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lib.runner", "plan", "--config", str(quickstart), "--set", "EPOCHS=2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_SECONDS,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("matrix ") and lines[0].endswith("quickstart")
    assert lines[-1] == "6 runs"  # 2 optimizers x (none + 2 sparsities) x 1 seed


def test_make_plan_with_overrides(quickstart: Path) -> None:
    result = make("plan", f"KCONFIG_CONFIG={quickstart}", "EPOCHS=2", "SET=SEEDS='0 1' MATRIX_NAME=mine")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("matrix ") and lines[0].endswith("mine")
    assert "lenet5-adamw-magnitude-s0.9-seed1" in result.stdout
    assert lines[-1] == "12 runs"  # 2 optimizers x (none + 2 sparsities) x 2 seeds


def test_make_plan_ignores_environment_variables(quickstart: Path) -> None:
    result = make("plan", f"KCONFIG_CONFIG={quickstart}", env={"EPOCHS": "0", "JOBS": "0", "SET": "SEEDS=-1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "6 runs"


def test_make_plan_bad_override(quickstart: Path) -> None:
    result = make("plan", f"KCONFIG_CONFIG={quickstart}", "EPOCHS=0")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: override: EPOCHS=0 did not take effect (the allowed range is 1..100000); "
        'fix it with `make menuconfig` or `make SET="SYM=VALUE"`'
    ]


def test_make_plan_missing_config(tmp_path: Path) -> None:
    result = make("plan", f"KCONFIG_CONFIG={tmp_path / 'missing'}")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "make defconfig" in result.stderr


# --------------------------------------------------------------------------- hostile values

# Values that create a MARK file if make or the shell ever evaluates them. `{mark}` becomes an absolute path in
# tmp_path plus a relative name (make's working directory, the repository root).
HOSTILE = {
    "subst": "$(touch {mark})",
    "backtick": "`touch {mark}`",
    "semicolon": "1; touch {mark}",
    "pipe": "1 | touch {mark}",
    "make-shell": "$(shell touch {mark})",
    "quotes": """it's "quoted" $(touch {mark})""",
}

# Each user variable of each target, and where the program must receive its value: after a flag, as the one
# `SYM=` assignment it makes in the `--set` override string, or as the last argument. `defconfig-%`'s
# variable is the stem.
OVERRIDE_VARS = [
    ("EPOCHS", "--set EPOCHS="),
    ("MAX_ITERS", "--set GPT2_MAX_ITERS="),
    ("JOBS", "--set JOBS="),
    ("SET", "--set"),
    ("KCONFIG_CONFIG", "--config"),
]
PASSED = [
    ("sample", "RUN", "first"),
    ("sample", "MATRIX", "--matrix"),
    ("sample", "SET", "--set"),
    ("continue", "SET", "--set"),
    ("sample", "PROMPT", "--prompt"),
    ("sample", "TOKENS", "--tokens"),
    ("sample", "TEMPERATURE", "--temperature"),
    ("sample", "TOP_K", "--top-k"),
    ("sample", "SEED", "--seed"),
    ("prune", "RUN", "first"),
    ("prune", "METHOD", "--method"),
    ("prune", "SPARSITY", "--sparsity"),
    ("prune", "PATTERN", "--pattern"),
    ("prune", "CALIBRATION", "--calibration"),
    ("prune", "SAMPLES", "--samples"),
    ("analyze", "RUN", "first"),
    ("analyze", "SPARSITY", "--sparsity"),
    ("analyze", "SAMPLES", "--samples"),
    ("analyze", "BLOCKS", "--blocks"),
    ("continue", "MATRIX", "--matrix"),
    ("continue", "JOBS", "--jobs"),
    ("status", "MATRIX", "--matrix"),
    ("status", "SET", "--set"),
    ("estimate", "MATRIX", "--matrix"),
    ("estimate", "SET", "--set"),
    ("estimate", "JOBS", "--jobs"),
    *[(target, var, how) for target in ("plan", "run") for var, how in OVERRIDE_VARS],
    ("defconfig", "DEFCONFIG", "last"),
    ("defconfig-%", "%", "last"),
    ("update-graphs", "MATRIX", "--matrix"),
    ("query", "SQL", "last"),
    ("query", "SET", "--set"),
    ("clean-results", "MATRIX", "--matrix"),
    ("clean-results", "YES", "no --yes"),
    ("clean", "PYTHON3", "the program"),
]


@pytest.fixture
def marks(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(absolute, in the repository root): the files a hostile value would create."""
    outside, inside = tmp_path / "MARK", ROOT / f"MARK-{uuid.uuid4().hex[:8]}"
    yield outside, inside
    inside.unlink(missing_ok=True)


def hostile_value(template: str, marks: tuple[Path, Path], slash: bool = True) -> str:
    """``template`` touching both marks (only the relative one without ``slash``: a goal's stem holds none)."""
    outside, inside = marks
    return template.format(mark=f"{outside} {inside.name}" if slash else inside.name)


def recorder(python: Path, log: Path) -> None:
    """A `python` at ``python`` that appends its arguments to ``log`` as a JSON line, and does nothing else."""
    python.parent.mkdir(parents=True, exist_ok=True)
    code = f"import json, sys\nwith open({str(log)!r}, 'a') as f:\n    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    python.write_text(f"#!{sys.executable} -S\n{code}")
    python.chmod(0o755)


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def recording_venv(tmp_path: Path) -> tuple[Path, Path]:
    """(virtualenv, log): a VIRTUAL_ENV for make whose python records its arguments; no install stamp."""
    venv, log = tmp_path / "venv", tmp_path / "calls.jsonl"
    recorder(venv / "bin" / "python", log)
    return venv, log


def received(argv: list[str], how: str) -> str:
    """The value as the program got it (see PASSED)."""
    if how == "last":
        return argv[-1]
    if how == "first":  # the first argument after `-m <module>`
        return argv[2]
    flag, _, assignment = how.partition(" ")
    got = argv[argv.index(flag) + 1]
    if assignment:
        (word,) = shlex.split(got)
        assert word.startswith(assignment), got
        return word.removeprefix(assignment)
    return got


@pytest.mark.parametrize("template", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize(("target", "var", "how"), PASSED, ids=[f"{t}-{v}" for t, v, _ in PASSED])
def test_make_passes_hostile_values_as_text(
    tmp_path: Path, marks: tuple[Path, Path], recording_venv: tuple[Path, Path], target, var, how, template
) -> None:
    venv, log = recording_venv
    value = hostile_value(template, marks, slash=var != "%")
    if var == "PYTHON3":  # a program: a recorder at a path that is itself the hostile value
        value = f"{tmp_path}/{value}/python"
        recorder(Path(value), log)
    args = [f"defconfig-{value}"] if var == "%" else [target, f"{var}={value}"]
    if var != "KCONFIG_CONFIG":
        args.append(f"KCONFIG_CONFIG={tmp_path / '.config'}")
    result = make("-o", str(venv / STAMP), *args, env={"VIRTUAL_ENV": str(venv)})
    assert [m for m in marks if m.exists()] == [], f"{var}={value!r} ran as code"
    assert result.returncode == 0, result.stderr
    (argv,) = calls(log)
    if how == "the program":
        assert argv == ["-m", "lib.housekeeping", "clean"]
    elif how == "no --yes":
        assert "--yes" not in argv
    else:
        assert received(argv, how) == value


def test_make_passes_values_as_typed(tmp_path: Path, recording_venv: tuple[Path, Path]) -> None:
    venv, log = recording_venv
    config = tmp_path / ".config"
    for args in (
        ["sample", "RUN=r", "PROMPT=def ", "TOKENS=5", "TEMPERATURE=0.5", "TOP_K=0", "SEED=-1"],
        ["sample", "RUN=r", "PROMPT="],
        ["clean-results", "MATRIX=m", "YES=1"],
        ["continue"],
        ["continue", "MATRIX=m", "JOBS=2"],
        ["status"],
        ["status", "MATRIX=m", "SET=RESULTS_DIR=r"],
        ["estimate", "MATRIX=m", "JOBS=2"],
        ["plan", "EPOCHS=2", "SET=SEEDS='0 1' MATRIX_NAME=mine"],
        ["query", "SQL=select 'a' -- b"],
        ["query", "SQL=-- only a comment", "SET=RESULTS_DIR=r"],
    ):
        result = make("-o", str(venv / STAMP), *args, f"KCONFIG_CONFIG={config}", env={"VIRTUAL_ENV": str(venv)})
        assert result.returncode == 0, result.stderr
    assert calls(log) == [
        ["-m", "scripts.sample", "r", "--config", str(config), "--prompt", "def ", "--tokens", "5"]
        + ["--temperature", "0.5", "--top-k", "0", "--seed", "-1"],
        ["-m", "scripts.sample", "r", "--config", str(config)],
        ["-m", "lib.runner", "clean-results", "--matrix", "m", "--yes"],
        ["-m", "lib.runner", "continue", "--config", str(config)],
        ["-m", "lib.runner", "continue", "--config", str(config), "--matrix", "m", "--jobs", "2"],
        ["-m", "lib.runner", "status", "--config", str(config)],
        ["-m", "lib.runner", "status", "--config", str(config), "--matrix", "m", "--set", "RESULTS_DIR=r"],
        ["-m", "lib.runner", "estimate", "--config", str(config), "--matrix", "m", "--jobs", "2"],
        ["-m", "lib.runner", "plan", "--config", str(config), "--set", "EPOCHS='2' SEEDS='0 1' MATRIX_NAME=mine"],
        ["-m", "scripts.query", "--config", str(config), "--", "select 'a' -- b"],
        ["-m", "scripts.query", "--config", str(config), "--set", "RESULTS_DIR=r", "--", "-- only a comment"],
    ]


# The same hostile value through the real programs: each fails with one `error:` line, the value as text in
# it. (target, variable, the variables the call also needs, the start of the error line). Where the variable
# under test is not RUN or MATRIX, those point nowhere, so nothing runs after the arguments are read.
REJECTED = [
    ("sample", "RUN", {}, "error: {value} is not a run directory"),
    ("sample", "PROMPT", {"RUN": "nowhere"}, "error: {nowhere} is not a run directory"),  # free text
    ("sample", "TOKENS", {"RUN": "nowhere"}, "error: argument --tokens: TOKENS={value!r} is not an integer"),
    ("sample", "TEMPERATURE", {"RUN": "nowhere"}, "error: argument --temperature: TEMPERATURE={value!r} is not"),
    ("sample", "TOP_K", {"RUN": "nowhere"}, "error: argument --top-k: TOP_K={value!r} is not an integer"),
    ("sample", "SEED", {"RUN": "nowhere"}, "error: argument --seed: SEED={value!r} is not an integer"),
    ("continue", "MATRIX", {}, "error: {root}/{value} has no "),
    ("continue", "JOBS", {"MATRIX": "nowhere"}, "error: override JOBS={value}: JOBS takes an integer in 1..1024; "),
    ("status", "MATRIX", {}, "error: {root}/{value} has no matrix.json: nothing to report"),
    ("status", "SET", {}, "error: override "),
    ("estimate", "MATRIX", {}, "error: {root}/{value} has no matrix.json: nothing to estimate"),
    ("estimate", "JOBS", {"MATRIX": "nowhere"}, "error: override JOBS={value}: JOBS takes an integer in 1..1024; "),
    ("estimate", "SET", {}, "error: override "),
    ("plan", "EPOCHS", {"KCONFIG_CONFIG": "quickstart"}, "error: override EPOCHS={value}: "),
    ("plan", "MAX_ITERS", {"KCONFIG_CONFIG": "quickstart"}, "error: override GPT2_MAX_ITERS={value}: "),
    ("plan", "JOBS", {"KCONFIG_CONFIG": "quickstart"}, "error: override JOBS={value}: "),
    ("plan", "SET", {"KCONFIG_CONFIG": "quickstart"}, "error: override "),
    ("plan", "KCONFIG_CONFIG", {}, "error: {value} does not exist"),
    ("defconfig", "DEFCONFIG", {}, "error: unknown defconfig {value!r}"),
    ("defconfig-%", "%", {}, "error: unknown defconfig {value!r}"),
    # several words name several matrices to compare: the first, "it's", is the one missing
    ("update-graphs", "MATRIX", {}, "error: matrix directory it's does not exist"),
    ("query", "SQL", {}, "error: SQL: Parser Error: unterminated string literal"),
    ("clean-results", "MATRIX", {}, "error: {root}/{value} is not a matrix directory"),
    ("clean-results", "YES", {"MATRIX": "nowhere"}, "error: {nowhere} is not a matrix directory"),
]


@pytest.mark.parametrize(("target", "var", "others", "expected"), REJECTED, ids=[f"{t}-{v}" for t, v, *_ in REJECTED])
def test_make_rejects_hostile_values_in_one_line(
    request: pytest.FixtureRequest, tmp_path: Path, marks: tuple[Path, Path], target, var, others, expected
) -> None:
    value = hostile_value(HOSTILE["quotes"], marks, slash=var != "%")
    nowhere = tmp_path / "nowhere"
    given = {"KCONFIG_CONFIG": str(tmp_path / ".config")}
    for name, what in others.items():
        given[name] = str(nowhere if what == "nowhere" else request.getfixturevalue(what))
    if var == "%":
        target = f"defconfig-{value}"
    else:
        given[var] = value
    result = make(target, *(f"{k}={v}" for k, v in given.items()))
    assert [m for m in marks if m.exists()] == [], f"{var}={value!r} ran as code"
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "usage:" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(expected.format(value=value, nowhere=nowhere, root=ROOT)), errors[0]


BAD_VERSIONS = {**HOSTILE, "word": "latest", "specifier": ">=2.0", "v-prefix": "v2.13.0", "spaced": "2.13.0 "}


@pytest.mark.parametrize("template", BAD_VERSIONS.values(), ids=BAD_VERSIONS.keys())
def test_make_env_rejects_a_torch_that_is_not_a_version(
    marks: tuple[Path, Path], recording_venv: tuple[Path, Path], template: str
) -> None:
    """The install recipe checks TORCH before it runs anything: python (here a recorder) is never called."""
    venv, log = recording_venv
    value = hostile_value(template, marks)
    result = make("env", f"TORCH={value}", env={"VIRTUAL_ENV": str(venv)})
    assert [m for m in marks if m.exists()] == [], f"TORCH={value!r} ran as code"
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: TORCH={value} is not a version (e.g. TORCH=2.13.0)"], result.stderr
    assert calls(log) == [] and not (venv / STAMP).exists()


@pytest.mark.parametrize("version", ["2.13.0", "2.14.1+cpu", "2.5.0rc1", "2.6.0.dev20250101+cu124"])
def test_make_env_installs_the_torch_version_given(recording_venv: tuple[Path, Path], version: str) -> None:
    venv, log = recording_venv
    result = make("env", f"TORCH={version}", env={"VIRTUAL_ENV": str(venv)})
    assert result.returncode == 0, result.stderr
    assert calls(log) == [
        ["-c", "import torch"],  # the recorder "has" torch, so TORCH= from the command line reinstalls it
        ["-m", "pip", "install", f"torch=={version}"],
        ["-m", "pip", "install", "-e", ".[dev]"],
    ]
    assert (venv / STAMP).exists()


BAD_EXTRAS = {**HOSTILE, "unknown": "tensorboard", "commas": "trackio,wandb", "one-bad": "wandb nope"}


@pytest.mark.parametrize("installed", [False, True], ids=["fresh", "installed"])
@pytest.mark.parametrize("template", BAD_EXTRAS.values(), ids=BAD_EXTRAS.keys())
def test_make_env_rejects_extras_outside_the_fixed_set(
    marks: tuple[Path, Path], recording_venv: tuple[Path, Path], template: str, installed: bool
) -> None:
    """EXTRAS is checked before anything is installed, whether the environment exists yet or not."""
    venv, log = recording_venv
    value = hostile_value(template, marks)
    args = ["-o", str(venv / STAMP)] if installed else []
    result = make(*args, "env", f"EXTRAS={value}", env={"VIRTUAL_ENV": str(venv)})
    assert [m for m in marks if m.exists()] == [], f"EXTRAS={value!r} ran as code"
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: EXTRAS={value}: each word must be one of: trackio wandb hf notebook slurm "
        '(e.g. EXTRAS="trackio wandb")'
    ]
    assert calls(log) == [] and not (venv / STAMP).exists()


@pytest.mark.parametrize(
    ("extras", "spec"), [("wandb", ".[dev,wandb]"), ("wandb trackio wandb", ".[dev,trackio,wandb]"), ("", None)]
)
def test_make_env_installs_the_extras_given(recording_venv: tuple[Path, Path], extras: str, spec: str | None) -> None:
    venv, log = recording_venv
    result = make("-o", str(venv / STAMP), "env", f"EXTRAS={extras}", env={"VIRTUAL_ENV": str(venv)})
    assert result.returncode == 0, result.stderr
    assert calls(log) == ([["-m", "pip", "install", "-e", spec]] if spec else [])
    result = make("env", env={"VIRTUAL_ENV": str(venv), "EXTRAS": "trackio"})  # from the environment: ignored
    assert result.returncode == 0, result.stderr
    assert calls(log)[-1] == ["-m", "pip", "install", "-e", ".[dev]"]


def test_make_test_installs_the_trackers_once(recording_venv: tuple[Path, Path]) -> None:
    venv, log = recording_venv
    for _ in range(2):
        assert make("-o", str(venv / STAMP), "test", env={"VIRTUAL_ENV": str(venv)}).returncode == 0
    pytest = ["-m", "pytest", "-q", "-n", "auto", "--maxprocesses", "4", "--dist", "loadfile", "--no-loadscope-reorder"]
    assert calls(log) == [["-m", "pip", "install", "-e", ".[dev,trackio,wandb,hf,slurm]"], pytest, pytest]


def test_tracker_targets_call_lib_tracking(recording_venv: tuple[Path, Path]) -> None:
    venv, log = recording_venv
    for target in ("trackio-test", "wandb-test", "trackio-view"):
        assert make("-o", str(venv / STAMP), target, env={"VIRTUAL_ENV": str(venv)}).returncode == 0
    assert calls(log) == [
        ["-m", "lib.tracking", "test", "trackio"],
        ["-m", "lib.tracking", "test", "wandb"],
        ["-m", "lib.tracking", "view"],
    ]
