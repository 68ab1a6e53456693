"""A real single-node Slurm for ``make test-slurm``: Debian's slurm-wlm and munge, installed when missing, a
``slurm.conf`` for this host in a folder of the test's own (``SLURM_CONF`` points every Slurm command there),
slurmctld and slurmd started here and stopped afterwards.

Settings known to work on a Debian machine without systemd: ``AuthType=auth/munge``,
``ProctrackType=proctrack/linuxproc`` (every process a job starts is tracked, so a requeue signals the training
process too), ``TaskPlugin=task/none``, ``SlurmUser=root``; the daemons run as root. The ports are not Slurm's
default ones, so a Slurm already on the machine is left alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scontrol", "sinfo")
CTLD_PORT, SLURMD_PORT = 16817, 16818


class SlurmUnavailable(Exception):
    """Slurm cannot be installed or started here: said once, with the reason."""


def install() -> None:
    """apt-get install slurm-wlm and munge when any of their programs is missing (needs root)."""
    if all(shutil.which(d) or Path("/usr/sbin", d).exists() for d in DAEMONS):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        needs = " ".join(PACKAGES)
        raise SlurmUnavailable(f"Slurm is not installed and installing it ({needs}) needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if out.returncode:
            raise SlurmUnavailable(f"`{' '.join(cmd)}` failed: {out.stderr.strip()[-500:]}")


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _munge_works() -> bool:
    try:
        encoded = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        if encoded.returncode:
            return False
        return subprocess.run(["unmunge"], input=encoded.stdout, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _node() -> tuple[str, int, int]:
    """This host's name, CPUs and memory (MB) as slurmd sees them."""
    out = subprocess.run([_sbin("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
    fields = dict(w.split("=", 1) for w in out.split() if "=" in w)
    return (
        fields.get("NodeName", socket.gethostname()),
        int(fields.get("CPUs", os.cpu_count() or 1)),
        int(int(fields.get("RealMemory", 2048)) * 0.9),
    )


@dataclass
class Cluster:
    folder: Path
    conf: Path
    started: list[int]
    partition: str = "debug"

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def stop(self) -> None:
        for pid in self.started:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        for pid in self.started:
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)


def start(folder: Path) -> Cluster:
    """Start munged (unless one works already), slurmctld and slurmd; wait until the node is idle."""
    if os.geteuid() != 0:
        raise SlurmUnavailable("the test cluster's daemons run as root (SlurmUser=root); run make test-slurm as root")
    install()
    folder.mkdir(parents=True, exist_ok=True)
    started: list[int] = []
    if not _munge_works():
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["mungekey", "--create"], check=True, timeout=60)
        pidfile = folder / "munged.pid"
        subprocess.run([_sbin("munged"), "--force", f"--pid-file={pidfile}"], check=True, timeout=30)
        started.append(int(pidfile.read_text()))
        if not _munge_works():
            raise SlurmUnavailable("munged started but `munge -n | unmunge` fails")
    host, cpus, memory = _node()
    conf = folder / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=sparsitylabtest",
                f"SlurmctldHost={host}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SchedulerType=sched/backfill",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "MpiDefault=none",
                "ReturnToService=2",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "KillWait=30",
                f"SlurmctldPort={CTLD_PORT}",
                f"SlurmdPort={SLURMD_PORT}",
                f"StateSaveLocation={folder / 'state'}",
                f"SlurmdSpoolDir={folder / 'spool'}",
                f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
                f"SlurmdPidFile={folder / 'slurmd.pid'}",
                f"SlurmctldLogFile={folder / 'slurmctld.log'}",
                f"SlurmdLogFile={folder / 'slurmd.log'}",
                f"NodeName={host} CPUs={cpus} RealMemory={memory} State=UNKNOWN",
                f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    (folder / "state").mkdir(exist_ok=True)
    (folder / "spool").mkdir(exist_ok=True)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = Cluster(folder, conf, started)
    try:
        for daemon, pidfile in (("slurmctld", "slurmctld.pid"), ("slurmd", "slurmd.pid")):
            subprocess.run([_sbin(daemon), "-f", str(conf)], env=env, check=True, timeout=60)
            deadline = time.monotonic() + 30
            while not (folder / pidfile).exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            cluster.started.insert(0, int((folder / pidfile).read_text()))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "--noheader", "--format=%t"], env=env, capture_output=True, text=True)
            if out.stdout.strip() == "idle":
                return cluster
            time.sleep(0.5)
        raise SlurmUnavailable(f"the node did not become idle; see {folder}/slurmctld.log and slurmd.log")
    except BaseException:
        cluster.stop()
        raise
