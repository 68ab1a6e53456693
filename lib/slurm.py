"""The Slurm launcher (``LAUNCHER_SLURM``): one Slurm job per run, submitted through submitit, and the ledger kept
by the submitting side alone.

``make`` (and ``make continue``) takes the matrix's lock, collects the outcome of every run whose job has left
the queue, and submits each run that is neither done nor still queued or running, as the elements of one job
array; then it releases the lock and returns. The login node is not held.

Who writes what. A job writes only its run directory: the training process (rank 0) writes it as on a
workstation, and the job records itself in ``<run>/slurm.json`` (job id, submission, node, exit status). The
ledger is written only by the submitting side, under the lock: a job never touches it, so a second node or a
node that never starts cannot mark a run failed, and nothing depends on locks across the cluster's nodes.

Double submission. A submission is first written down (``<matrix>/.slurm/submissions/<token>.json``: the runs,
in array order), then given to sbatch under the job name ``sparsity-lab-<token>``, then recorded in the ledger.
A submitting shell killed between sbatch and the ledger leaves the note behind; the next ``make continue`` finds
the jobs by that name in ``squeue`` (or, when they have already ended, by the ``slurm.json`` they wrote) and
records them before it submits anything. A run is resubmitted only when neither the ledger nor the queue knows
a live job of it.

Preemption and time limits. Jobs are submitted with ``--requeue`` and ``--signal=USR2@SLURM_SIGNAL_SECONDS``.
A training process stops resumably on SIGTERM (preemption, ``scontrol requeue``) and SIGUSR2 (the time limit
is near): it saves a checkpoint at its next step boundary and exits. On SIGUSR2 submitit asks the job
(:meth:`TrainJob.checkpoint`) and requeues it; on preemption Slurm requeues it. The requeued job starts the
same training command, which resumes from the checkpoint exactly.

Multi-node runs (a run needing more GPUs than a node has): one task per node, each starting torchrun with
``--nnodes``, ``--node-rank`` and a c10d rendezvous on the first node of the job; only node 0's rank 0 writes
the run directory.
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib import config as config_mod
from lib import results
from lib.errors import UserError
from lib.ledger import Ledger
from lib.process import child_env

logger = logging.getLogger("runner")

JOB_NAME = "sparsity-lab-{token}"
SUBMISSIONS = Path(".slurm") / "submissions"  # in the matrix directory: notes of submissions in flight
LOGS = Path(".slurm") / "logs"  # submitit's pickles and each job's stdout/stderr
# squeue states of a job that is still Slurm's business: its run must not be submitted again.
LIVE = frozenset(
    "PENDING CONFIGURING RUNNING COMPLETING SUSPENDED REQUEUED REQUEUE_FED REQUEUE_HOLD RESIZING SIGNALING "
    "STAGE_OUT STOPPED RESV_DEL_HOLD".split()
)
SQUEUE_TIMEOUT = 60
FIX_SETTINGS = 'fix it in `make menuconfig` (Runtime > Slurm) or with SET="SYM=VALUE"'


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Shape:
    """How one run maps onto Slurm: ``nodes`` nodes, one task each, ``procs_per_node`` training processes
    (torchrun) per node, ``gpus_per_node`` GPUs and ``cpus`` CPUs on each."""

    nodes: int
    procs_per_node: int
    gpus_per_node: int
    cpus: int

    @classmethod
    def of(cls, values: dict) -> Shape:
        procs, gpus, cpus = values.get("DDP_PROCS", 1), values["SLURM_GPUS_PER_RUN"], values["SLURM_CPUS_PER_RUN"]
        if gpus == 0:
            return cls(1, procs, 0, cpus)
        if procs > 1 and procs != gpus:
            raise UserError(
                f"SLURM_GPUS_PER_RUN={gpus} with DDP_PROCS={procs}: a DDP run takes one GPU per process, so the "
                f"two must be equal (or DDP_PROCS=1 for a run on one GPU); {FIX_SETTINGS}"
            )
        if procs == 1 and gpus > 1:
            raise UserError(
                f"SLURM_GPUS_PER_RUN={gpus} with DDP_PROCS=1: one training process uses one GPU; set DDP_PROCS="
                f"{gpus} to train on {gpus} GPUs, or SLURM_GPUS_PER_RUN=1; {FIX_SETTINGS}"
            )
        per_node = values["SLURM_GPUS_PER_NODE"]
        nodes = math.ceil(gpus / per_node)
        if gpus % nodes:
            raise UserError(
                f"SLURM_GPUS_PER_RUN={gpus} does not split evenly over the {nodes} nodes it needs at "
                f"SLURM_GPUS_PER_NODE={per_node}; use a multiple of {nodes}; {FIX_SETTINGS}"
            )
        return cls(nodes, gpus // nodes, gpus // nodes, cpus)

    @property
    def threads(self) -> int:
        """CPU threads per training process."""
        return max(1, self.cpus // self.procs_per_node)


def sbatch_parameters(values: dict, token: str) -> dict[str, Any]:
    """submitit's ``SlurmExecutor`` parameters (its names for sbatch's options) for the runs of ``values``."""
    shape = Shape.of(values)
    extra: dict[str, Any] = {"requeue": True, "chdir": str(config_mod.ROOT)}
    for word in values["SLURM_EXTRA_SBATCH"]:
        key, eq, value = word[2:].partition("=")
        extra[key.replace("-", "_")] = value if eq else True
    params: dict[str, Any] = {
        "job_name": JOB_NAME.format(token=token),
        "time": values["SLURM_TIME_MINUTES"],
        "nodes": shape.nodes,
        "ntasks_per_node": 1,
        "cpus_per_task": shape.cpus,
        "signal_delay_s": values["SLURM_SIGNAL_SECONDS"],
        "array_parallelism": values["SLURM_ARRAY_PARALLELISM"],
        "stderr_to_stdout": True,
        "additional_parameters": extra,
    }
    if shape.gpus_per_node:
        params["gpus_per_node"] = shape.gpus_per_node
    if values["SLURM_MEM_GB"]:
        params["mem"] = f"{values['SLURM_MEM_GB']}G"
    for symbol, name in (
        ("SLURM_PARTITION", "partition"),
        ("SLURM_ACCOUNT", "account"),
        ("SLURM_QOS", "qos"),
        ("SLURM_CONSTRAINT", "constraint"),
    ):
        if values[symbol]:
            params[name] = values[symbol]
    return params


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise UserError(
            f"LAUNCHER_SLURM needs Slurm's `{name}` on PATH and it is not there: run `make` on a node that can "
            "submit jobs (a login node), or choose LAUNCHER_LOCAL; nothing was submitted"
        )
    return path


def _slurm(args: list[str], what: str) -> str:
    """Run a Slurm command; its failure is one UserError naming it."""
    cmd = [_tool(args[0]), *args[1:]]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=SQUEUE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise UserError(f"`{' '.join(args)}` did not answer in {SQUEUE_TIMEOUT} s: {what}") from None
    if out.returncode != 0:
        message = " ".join((out.stderr or out.stdout).split()) or f"exit status {out.returncode}"
        raise UserError(f"`{' '.join(args)}` failed ({message}): {what}")
    return out.stdout


def preflight(values: dict) -> None:
    """Everything that can be checked before anything is written or submitted: the settings agree with each
    other, submitit imports, sbatch and squeue exist, and the partition is one the cluster has."""
    Shape.of(values)
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UserError(
            "LAUNCHER_SLURM needs the Python package submitit: `make env EXTRAS=slurm` installs it; nothing was "
            "submitted"
        ) from None
    _tool("sbatch")
    _tool("srun")  # submitit starts each job's tasks with it
    known = set(_slurm(["sinfo", "--noheader", "--format=%R"], "cannot list the cluster's partitions").split())
    for partition in filter(None, values["SLURM_PARTITION"].split(",")):
        if partition not in known:
            raise UserError(
                f"SLURM_PARTITION={values['SLURM_PARTITION']!r}: the cluster has no partition {partition!r} "
                f"(it has: {', '.join(sorted(known)) or 'none'}); {FIX_SETTINGS}; nothing was submitted"
            )


# --------------------------------------------------------------------------- the job


@dataclass
class TrainJob:
    """What a Slurm job runs: one run's training command, on each node of the job. Pickled by submitit."""

    matrix_dir: str
    run_id: str
    model: str
    token: str
    shape: Shape
    signal_seconds: int
    _process: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_process"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _process=None)

    @property
    def run_dir(self) -> Path:
        return Path(self.matrix_dir) / self.run_id

    def command(self, node: int, nodes: int, hosts: list[str], job_id: str) -> list[str]:
        """The training command on node ``node`` of ``nodes`` (``hosts``: the job's nodes, in order)."""
        from lib.scheduler import train_command

        torchrun: list[str] = []
        if nodes > 1:  # every node's torchrun meets the first node's, on a port of the job's own
            port = 20000 + sum(map(ord, job_id)) * 7919 % 20000
            torchrun = [
                f"--nnodes={nodes}",
                f"--node-rank={node}",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint={hosts[0]}:{port}",
                f"--rdzv-id={job_id}",
            ]
        return train_command(self.run_dir, self.model, self.shape.threads, self.shape.procs_per_node, torchrun)

    def __call__(self) -> int:
        import submitit

        env = submitit.JobEnvironment()
        node, nodes = env.node, env.num_nodes
        record = self.run_dir / results.SLURM_JOB
        status = results.read_json(self.run_dir / results.STATUS, {})
        if status.get("state") == "done" and (self.run_dir / results.SUMMARY).is_file():
            return 0  # a requeue of a run that had finished: nothing to do
        cmd = self.command(node, nodes, list(env.hostnames), str(env.job_id))
        if node == 0:
            results.atomic_write_json(
                record,
                {
                    "job": str(env.job_id),
                    "submission": self.token,
                    "host": socket.gethostname(),
                    "started": time.time(),
                },
            )
            log = open(self.run_dir / results.LOG, "a")
            log.write(f"$ {' '.join(cmd)}  # Slurm job {env.job_id}, {nodes} node(s)\n")
            log.flush()
        else:
            log = None  # other nodes' output goes to the job's own log; only node 0 writes the run directory
        self._process = subprocess.Popen(
            cmd,
            cwd=config_mod.ROOT,
            env=child_env(),
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
            stdin=subprocess.DEVNULL,
        )
        rc = self._process.wait()
        if node == 0:
            log.close()
            entry = results.read_json(record, {})
            results.atomic_write_json(record, {**entry, "rc": rc, "ended": time.time()})
        return rc

    def checkpoint(self) -> Any:
        """submitit calls this on SIGUSR2 (the time limit is near): the training process, signalled too, saves a
        checkpoint at its next step boundary; wait for it, then hand submitit this job to requeue."""
        from submitit.helpers import DelayedSubmission

        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGUSR2)  # the same stop the training process may have had already
            try:
                process.wait(timeout=max(5, self.signal_seconds - 10))
            except subprocess.TimeoutExpired:
                logger.error("the training process did not stop in time; its last periodic checkpoint resumes it")
        return DelayedSubmission(
            TrainJob(self.matrix_dir, self.run_id, self.model, self.token, self.shape, self.signal_seconds)
        )


# --------------------------------------------------------------------------- the queue


def queue(names: list[str]) -> dict[str, str]:
    """Slurm's state (``squeue %T``) of every job or array element named in ``names``, by job id (``123`` or
    ``123_4``). Pending array elements are listed one by one (``--array``)."""
    if not names:
        return {}
    out = _slurm(
        ["squeue", "--noheader", "--array", "--format=%i|%T", f"--name={','.join(sorted(set(names)))}"],
        "cannot tell which runs are still queued or running, so nothing was submitted",
    )
    jobs = {}
    for line in out.splitlines():
        job, _, state = line.strip().partition("|")
        if job:
            jobs[job] = state.strip()
    return jobs


def _job_names(entries: Iterable[dict]) -> list[str]:
    """The job names of the submissions the ledger entries ``entries`` were sent in."""
    return [JOB_NAME.format(token=e["slurm"]["submission"]) for e in entries if e.get("slurm")]


# --------------------------------------------------------------------------- the submitting side


def _recover(matrix_dir: Path, ledger: Ledger) -> None:
    """Record the submissions a killed ``make`` made but did not record, from squeue or their jobs' records."""
    notes = sorted((matrix_dir / SUBMISSIONS).glob("*.json"))
    if not notes:
        return
    for note_path in notes:
        note = results.read_json(note_path, {})
        token, run_ids = note.get("token"), note.get("runs", [])
        live = queue([JOB_NAME.format(token=token)])
        array = {job.split("_")[0] for job in live}
        found = 0
        for index, run_id in enumerate(run_ids):
            entry = ledger.runs.get(run_id)
            if entry is None:
                continue
            job = f"{next(iter(array))}_{index}" if array else None
            record = results.read_json(matrix_dir / run_id / results.SLURM_JOB, {})
            if job is None and record.get("submission") == token:
                job = record.get("job")
            if job is not None:
                entry["state"], entry["reason"] = "submitted", None
                entry["attempts"] += 1
                entry["slurm"] = {"job": job, "submission": token, "submitted": note.get("created")}
                found += 1
        ledger.save()
        note_path.unlink()
        logger.info(
            "recorded submission %s (%d of %d runs found in Slurm), left by an interrupted `make`",
            token,
            found,
            len(run_ids),
        )


def collect(matrix_dir: Path, ledger: Ledger, live: dict[str, str]) -> None:
    """Record the outcome of every submitted run whose job has left the queue."""
    for entry in ledger.runs.values():
        if entry["state"] != "submitted" or entry["slurm"]["job"] in live:
            continue
        entry["state"], entry["reason"] = ended(matrix_dir / entry["run_id"], entry["slurm"]["job"])
    ledger.save()


def ended(run_dir: Path, job: str) -> tuple[str, str | None]:
    """The outcome of a run whose Slurm job ``job`` has left the queue, from what the job recorded."""
    record = results.read_json(run_dir / results.SLURM_JOB, {})
    if record.get("job") == job and record.get("rc") is not None:
        state, reason = results.outcome(run_dir, int(record["rc"]))
        return state, reason and f"{reason} (Slurm job {job})"
    if record.get("job") != job:
        return "interrupted", f"Slurm job {job} ended before it started the run (cancelled?); `make continue` resubmits"
    return (
        "interrupted",
        f"Slurm job {job} ended while the run trained (cancelled, timed out or its node failed); "
        "`make continue` resubmits it and it resumes from its last checkpoint",
    )


def launch(matrix_dir: Path, ledger: Ledger, values: dict) -> list[str]:
    """Collect finished jobs, then submit every run that is neither done nor live; returns the submitted run
    ids. Called with the matrix's lock held; returns at once (jobs run on the cluster)."""
    preflight(values)
    _recover(matrix_dir, ledger)
    live = queue(_job_names(ledger.runs.values()))
    collect(matrix_dir, ledger, live)
    todo = [e for e in ledger.runs.values() if e["state"] != "done" and e["state"] != "submitted"]
    waiting = sum(e["state"] == "submitted" for e in ledger.runs.values())
    if waiting:
        logger.info("%d run(s) still queued or running in Slurm: left alone", waiting)
    for e in todo:
        if e["state"] == "failed":
            logger.info("resubmitting failed run %s (last failure: %s)", e["run_id"], e["reason"])
        elif e["state"] in ("interrupted", "running"):
            logger.info("resubmitting interrupted run %s: it resumes from its checkpoint", e["run_id"])
    if todo:
        submit(matrix_dir, ledger, todo, values)
    return [e["run_id"] for e in todo]


def submit(matrix_dir: Path, ledger: Ledger, entries: list[dict], values: dict) -> None:
    """Submit ``entries`` as one job array. sbatch refusing (bad account, QOS, limits) is one UserError, with
    nothing submitted and the ledger as it was."""
    import submitit

    from lib.scheduler import prepare_run_dir

    token = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
    note_path = matrix_dir / SUBMISSIONS / f"{token}.json"
    note_path.parent.mkdir(parents=True, exist_ok=True)
    results.atomic_write_json(
        note_path, {"token": token, "created": time.time(), "runs": [e["run_id"] for e in entries]}
    )
    shape = Shape.of(values)
    executor = submitit.SlurmExecutor(folder=matrix_dir / LOGS / "%j", max_num_timeout=1000)
    executor.update_parameters(**sbatch_parameters(values, token))
    where, warning = str(matrix_dir), values["SLURM_SIGNAL_SECONDS"]
    calls = [TrainJob(where, e["run_id"], e["config"]["axes"]["model"], token, shape, warning) for e in entries]
    for e in entries:
        prepare_run_dir(matrix_dir, e)
    try:
        with executor.batch():
            jobs = [executor.submit(call) for call in calls]
    except Exception as e:  # submitit raises its own errors with sbatch's message
        note_path.unlink(missing_ok=True)
        message = " ".join(str(e).split())
        raise UserError(f"sbatch refused the jobs ({message}); {FIX_SETTINGS}; nothing was submitted") from None
    now = time.time()
    for entry, job in zip(entries, jobs, strict=True):
        entry["state"], entry["reason"] = "submitted", None
        entry["attempts"] += 1
        entry["slurm"] = {"job": str(job.job_id), "submission": token, "submitted": now}
    ledger.save()
    note_path.unlink()
    first, last = jobs[0].job_id, jobs[-1].job_id
    logger.info(
        "submitted %d run(s) to Slurm as %s (jobs %s..%s); `make status` shows them, `make continue` collects "
        "what finished and resubmits what did not",
        len(jobs),
        JOB_NAME.format(token=token),
        first,
        last,
    )


def states(ledger_runs: list[dict]) -> dict[str, str] | str:
    """For ``make status``: Slurm's state of each submitted run's job by run id (``-`` when the job has left
    the queue), or why the queue could not be read."""
    try:
        live = queue(_job_names(ledger_runs))
    except UserError as e:
        return str(e).split(":")[0]
    return {e["run_id"]: live.get(e["slurm"]["job"], "-") for e in ledger_runs if e.get("slurm")}
