"""Process helpers at the ground floor: dying with the parent, stop signals, the CPUs this process may use.

Nothing here imports torch or any other part of ``lib``, so a process can call :func:`die_with_parent` before
its slow imports.

Parent death. ``make`` starts the runner, the runner starts one training process per run (or ``torchrun``,
which starts the DDP workers). If ``make`` is killed, everything below it must go too, or an orphaned runner
keeps training and holds the matrix lock. Linux delivers ``PR_SET_PDEATHSIG`` when the parent dies, but only
if it was set while the parent was alive: a parent killed in the first instants, before the child set it,
leaves the child re-parented to init (or a subreaper) with no signal coming. So every process also checks,
right after setting it, that its parent is still the process that started it (named in
``SPARSITY_LAB_PARENT``), and exits at once otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1
PARENT_ENV = "SPARSITY_LAB_PARENT"  # pid of the process that started this one (or, under torchrun, its parent)
# "Stop at the next step boundary, resumably": Ctrl-C, a kill or preemption, and the two "time is nearly up"
# signals of batch schedulers (SIGUSR2 is what Slurm sends submitit's jobs, lib/slurm.py).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, i.e. from field 3 (state) on: index 1 is the
    parent pid, index 19 the start time in clock ticks since boot. None where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
    return stat.rsplit(")", 1)[1].split()


def _parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` (None where it cannot be read)."""
    fields = proc_stat(pid)
    return None if fields is None else int(fields[1])


def die_with_parent(expected_parent: int | None = None) -> None:
    """Linux: SIGKILL this process when its parent dies, and exit now if the parent is already gone.

    ``expected_parent`` (default: ``$SPARSITY_LAB_PARENT``) is the pid that started us. Under torchrun the
    parent is torchrun itself, started by the expected process, so there the grandparent must match.
    A no-op on other systems and when nothing names the parent.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if expected_parent is None:
        named = os.environ.get(PARENT_ENV, "")
        expected_parent = int(named) if named.isdigit() else None
    if expected_parent is None:
        return
    parent = os.getppid()
    if parent == expected_parent:
        return
    if "TORCHELASTIC_RUN_ID" in os.environ and _parent_of(parent) == expected_parent:
        return
    os.kill(os.getpid(), signal.SIGKILL)  # the parent died before we could tie ourselves to it


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child of this process: ``env`` (default: ours) naming us as its parent."""
    return {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}


def parse_cgroup_quota(cpu_max: str | None = None, quota_us: str | None = None, period_us: str | None = None) -> float:
    """CPUs allowed by a cgroup quota: v2's ``cpu.max`` (``"max 100000"`` or ``"150000 100000"``) or v1's
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (``-1`` = unlimited); ``inf`` when there is no quota."""
    if cpu_max is not None:
        quota, _, period = cpu_max.strip().partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return math.inf
    if quota_us is not None and period_us is not None and int(quota_us) > 0:
        return int(quota_us) / int(period_us)
    return math.inf


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def usable_cpus() -> int:
    """CPUs this process may actually use: its affinity mask, capped by the cgroup CPU quota (a container
    limited to 2 CPUs on a 64-core host has 64 in ``os.cpu_count()`` but 2 here). At least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = parse_cgroup_quota(_read("/sys/fs/cgroup/cpu.max"))
    if quota == math.inf:
        quota = parse_cgroup_quota(
            None, _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
        )
    if quota != math.inf:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


class StopRequest:
    """SIGINT, SIGTERM, SIGUSR1 and SIGUSR2 (a batch scheduler's "time is nearly up") as a flag polled at step
    boundaries: the training loop then saves a checkpoint and exits as interrupted.

    Later signals change nothing: the same stop often arrives twice (Ctrl-C reaches the whole foreground
    process group and the runner forwards it too; a scheduler signals every process of a job), and the
    second copy must not turn a clean stop into a lost step. The runner is the one that gives up waiting
    and kills (see ``lib.runner``).
    """

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum

    def install(self) -> StopRequest:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        return self

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""
