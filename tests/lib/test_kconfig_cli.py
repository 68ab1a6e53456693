"""The Kconfig targets (lib.kconfig_cli) as a user runs them: a subprocess, with --config in tmp_path so the
repository's .config is never touched; menuconfig is driven through a real pseudo-terminal."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
import types
from pathlib import Path

import pytest

from lib import config as cfgmod
from lib import kconfig_cli
from tests.helpers import HANG_GUARD_SECONDS

ROOT = cfgmod.ROOT
DEFCONFIG_NAMES = sorted(n for n in os.listdir(cfgmod.DEFCONFIGS) if not n.startswith("."))


def cli(config: Path, *args: str, timeout: float = HANG_GUARD_SECONDS) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lib.kconfig_cli", "--config", str(config), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_user_error(result: subprocess.CompletedProcess) -> str:
    """Exit status 2 and exactly one line on stderr, ``error: ...``; returns that line."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# --------------------------------------------------------------------------- defconfig / savedefconfig


def test_there_are_defconfigs() -> None:
    assert "quickstart" in DEFCONFIG_NAMES
    assert kconfig_cli.defconfig_names() == DEFCONFIG_NAMES


@pytest.mark.parametrize("name", DEFCONFIG_NAMES)
def test_defconfig_round_trip(tmp_path: Path, name: str) -> None:
    config, out = tmp_path / ".config", tmp_path / "defconfig"
    result = cli(config, "defconfig", name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {config}"
    result = cli(config, "savedefconfig", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == (cfgmod.DEFCONFIGS / name).read_bytes()


@pytest.mark.parametrize("name", DEFCONFIG_NAMES)
def test_defconfig_loads_and_describes_itself(name: str) -> None:
    cfg = cfgmod.load(cfgmod.DEFCONFIGS / name)
    assert cfg["MATRIX_DESCRIPTION"], f"defconfigs/{name} has no MATRIX_DESCRIPTION for list-defconfigs"
    assert cfg["MATRIX_DESCRIPTION"][0] not in "'\"", "a quoting mistake left quotes inside the value"
    assert cfg["MATRIX_NAME"] == name, "a defconfig's matrix is named after it"


@pytest.mark.parametrize("name", ["nope", "", "../Kconfig", ".hidden"])
def test_unknown_defconfig(tmp_path: Path, name: str) -> None:
    config = tmp_path / ".config"
    line = assert_user_error(cli(config, "defconfig", name))
    assert (f"unknown defconfig {name!r}" if name else "use `make defconfig DEFCONFIG=<name>`") in line
    assert line.endswith("valid names: " + ", ".join(DEFCONFIG_NAMES))
    assert not config.exists()


def test_unknown_defconfig_suggests_close_name(tmp_path: Path) -> None:
    line = assert_user_error(cli(tmp_path / ".config", "defconfig", "quickstar"))
    assert "(did you mean quickstart?)" in line


def test_defconfig_does_not_overwrite_on_error(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text("CONFIG_EPOCHS=3\n")
    assert_user_error(cli(config, "defconfig", "nope"))
    assert config.read_text() == "CONFIG_EPOCHS=3\n"


def test_savedefconfig_of_missing_config(tmp_path: Path) -> None:
    line = assert_user_error(cli(tmp_path / "missing", "savedefconfig", "--output", str(tmp_path / "out")))
    assert "no such file" in line and "make defconfig" in line
    assert not (tmp_path / "out").exists()


def test_savedefconfig_of_defaults_is_empty(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    assert cli(config, "alldefconfig").returncode == 0
    assert cli(config, "savedefconfig", "--output", str(tmp_path / "min")).returncode == 0
    assert (tmp_path / "min").read_text() == ""


# --------------------------------------------------------------------------- olddefconfig / alldefconfig


def test_alldefconfig_then_olddefconfig_is_idempotent(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    result = cli(config, "alldefconfig")
    assert result.returncode == 0, result.stderr
    first = config.read_bytes()
    assert b"CONFIG_OPTIMIZER_ADAMW=y\n" in first
    assert b"CONFIG_EPOCHS=10\n" in first
    for _ in range(2):
        result = cli(config, "olddefconfig")
        assert result.returncode == 0, result.stderr
        assert config.read_bytes() == first
    assert cfgmod.load(config)["EPOCHS"] == 10


def test_olddefconfig_fills_in_new_symbols(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text("CONFIG_EPOCHS=3\n")
    assert cli(config, "olddefconfig").returncode == 0
    text = config.read_text()
    assert "CONFIG_EPOCHS=3\n" in text
    assert "CONFIG_BATCH_SIZE=64\n" in text
    assert (tmp_path / ".config.old").read_text() == "CONFIG_EPOCHS=3\n"


def test_olddefconfig_without_config_writes_defaults(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    assert cli(config, "olddefconfig").returncode == 0
    assert cfgmod.load(config)["MATRIX_NAME"] == "default"


def test_olddefconfig_refuses_unknown_symbol(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    assert cli(config, "alldefconfig").returncode == 0
    broken = config.read_text() + 'CONFIG_TARGET_SPARSITY="0.5"\n'
    config.write_text(broken)
    line = assert_user_error(cli(config, "olddefconfig"))
    assert "unknown Kconfig symbol TARGET_SPARSITY; did you mean TARGET_SPARSITIES, ONESHOT_SPARSITIES?" in line
    assert config.read_text() == broken, "a refused .config is left as it was"


def test_olddefconfig_refuses_value_that_does_not_stick(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text("CONFIG_EPOCHS=0\n")
    line = assert_user_error(cli(config, "olddefconfig"))
    assert "EPOCHS=0" in line and "1..100000" in line


def test_olddefconfig_validates_typed_strings(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text('CONFIG_PRUNING_MAGNITUDE=y\nCONFIG_TARGET_SPARSITIES="1.5"\n')
    line = assert_user_error(cli(config, "olddefconfig"))
    assert "TARGET_SPARSITIES" in line


# --------------------------------------------------------------------------- list-defconfigs


def test_list_defconfigs(tmp_path: Path) -> None:
    result = cli(tmp_path / ".config", "list-defconfigs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == DEFCONFIG_NAMES
    for name, line in zip(DEFCONFIG_NAMES, lines, strict=True):
        desc = cfgmod.load(cfgmod.DEFCONFIGS / name)["MATRIX_DESCRIPTION"]
        assert line.rstrip().endswith(desc)
    assert not (tmp_path / ".config").exists()


# --------------------------------------------------------------------------- menuconfig / guiconfig


def test_menuconfig_refuses_a_broken_config(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text("CONFIG_EPOCH=3\n")
    line = assert_user_error(cli(config, "menuconfig"))
    assert "unknown Kconfig symbol EPOCH; did you mean EPOCHS?" in line
    assert config.read_text() == "CONFIG_EPOCH=3\n"


def test_guiconfig_without_tk_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lib.errors import UserError

    config = tmp_path / ".config"
    config.write_text("")
    monkeypatch.setitem(sys.modules, "guiconfig", None)  # `import guiconfig` raises ImportError
    monkeypatch.setenv("KCONFIG_CONFIG", "unset")  # so that the value the code sets is undone after the test
    monkeypatch.delenv("KCONFIG_CONFIG")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"guiconfig cannot start .*python3-tk.*make menuconfig"):
        kconfig_cli.main(["--config", str(config), "guiconfig"])


def test_interactive_relative_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Path] = {}
    fake = types.ModuleType("menuconfig")

    def fake_menuconfig(kconf: object) -> None:  # records the file the real UI would load and save
        seen["config"] = Path(os.environ["KCONFIG_CONFIG"]).resolve()

    fake.menuconfig = fake_menuconfig  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "menuconfig", fake)
    monkeypatch.setenv("KCONFIG_CONFIG", "unset")  # so that the value the code sets is undone after the test
    monkeypatch.delenv("KCONFIG_CONFIG")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".config").write_text("")
    assert kconfig_cli.main(["--config", ".config", "menuconfig"]) == 0
    assert seen["config"] == (tmp_path / ".config").resolve()


ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")


class Terminal:
    """A child process on a pseudo-terminal of a fixed size, with an expect-style reader."""

    def __init__(self, argv: list[str], rows: int = 40, cols: int = 120) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("LINES", "COLUMNS", "MENUCONFIG_STYLE")}
        env["TERM"] = "xterm-256color"
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True, close_fds=True
        )
        os.close(slave)
        self.output = bytearray()
        self.mark = 0

    def _read(self, timeout: float) -> bool:
        """Read what is there within ``timeout``; False once the child closed the terminal."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every slave end is closed
            return False
        self.output += data
        return bool(data)

    def screen_text(self) -> str:
        return ANSI.sub(b"", bytes(self.output[self.mark :])).decode("utf-8", "replace")

    def expect(self, *texts: str, timeout: float = HANG_GUARD_SECONDS) -> None:
        """Wait until every one of ``texts`` appears in the output written since the last expect or send."""
        deadline = time.monotonic() + timeout
        while not all(text in self.screen_text() for text in texts):
            if time.monotonic() > deadline or not self._read(0.1):
                raise AssertionError(f"{texts!r} not on screen; got {self.screen_text()[-2000:]!r}")
        self.mark = len(self.output)

    def send(self, keys: str) -> None:
        self.mark = len(self.output)
        os.write(self.master, keys.encode())

    def wait(self, timeout: float = HANG_GUARD_SECONDS) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.1)  # keep draining so the child never blocks on a full terminal
        return self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self.master)


@pytest.mark.skipif(sys.platform != "linux", reason="drives curses through a Linux pseudo-terminal")
def test_menuconfig_in_a_terminal(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    assert cli(config, "defconfig", "quickstart").returncode == 0
    before = config.read_text()
    assert "# CONFIG_OPTIMIZER_ADAM is not set\n" in before

    term = Terminal([sys.executable, "-m", "lib.kconfig_cli", "--config", str(config), "menuconfig"])
    try:
        term.expect("Models", "Optimizers", "Save minimal config")
        term.send("/")  # jump to a symbol by name (a regex on the lower-cased name)
        term.expect("narrow the search")
        term.send("^optimizer_adam$")
        term.expect("OPTIMIZER_ADAM")
        term.send("\n")  # jump: Adam is now the selected entry of the Optimizers menu
        term.send(" ")  # toggle it on
        term.send("S")  # save ...
        term.expect("Filename")
        term.send("\n")  # ... to the suggested file, the --config one
        term.expect("Success")
        term.send("\n")  # dismiss the message
        term.send("Q")  # quit: nothing left unsaved, so no question
        assert term.wait() == 0
        assert f"No changes to save (for '{config}')" in term.screen_text()
    finally:
        term.close()

    after = config.read_text()
    assert "CONFIG_OPTIMIZER_ADAM=y\n" in after
    assert 'CONFIG_ADAM_LR="1e-3"\n' in after
    assert (tmp_path / ".config.old").read_text() == before
    cfg = cfgmod.load(config)
    assert cfg["OPTIMIZER_ADAM"] is True
    assert cfg["OPTIMIZER_SGD"] is True and cfg["MATRIX_NAME"] == "quickstart"  # the rest is unchanged
