"""What every job of an experiment is doing: SLURM's state joined with its run directory.

The index says which jobs exist; SLURM (squeue/sacct) says their state, node and elapsed time;
the run directory (read through :mod:`steelseg_hpc.core.rundir`) says how far training got and how well.
Local-executor jobs have no scheduler: their state comes from the process and submitit's result.

Example:
    >>> rows = collect_status("smoke")  # doctest: +SKIP
    >>> rows[0].state, rows[0].epoch, rows[0].best_val_dice  # doctest: +SKIP
    ('COMPLETED', 2, 0.41)
"""
from __future__ import annotations

import os
import pickle
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from steelseg_hpc.compute import slurm
from steelseg_hpc.core import rundir
from steelseg_hpc.launch import local_jobs
from steelseg_hpc.launch.index import ExperimentIndex, JobRow

#: Prefix of the line a failing job writes to stderr; ``status`` reports the text after it.
ERROR_MARKER = "[steelseg] job failed:"

#: States for which ``status`` shows why and the tail of stderr.
PROBLEM_STATES = frozenset({"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
                            "BOOT_FAIL", "DEADLINE", "PREEMPTED"})


@dataclass
class JobStatus:
    """One row of ``steelseg-hpc status`` (``--json`` prints these as dicts)."""

    job_id: str
    experiment: str
    arch: str
    seed: int
    state: str
    run_dir: str
    node: str = ""
    elapsed: str = ""
    epoch: int | None = None
    epochs_total: int | None = None
    best_val_dice: float | None = None
    pixel_accuracy: float | None = None
    peak_memory_mb: float | None = None
    epoch_seconds: float | None = None
    reason: str = ""
    exit_code: str = ""
    #: Earlier attempts of the job that SLURM (or submitit) requeued, oldest first, in words.
    requeues: list[str] = field(default_factory=list)
    stderr_tail: list[str] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fill_metrics(status: JobStatus) -> None:
    """Add how far the job's run got, and how well, from its run directory."""
    rows = rundir.read_metrics(status.run_dir)
    final = rundir.read_final(status.run_dir)
    if rows:
        last = rows[-1]
        status.epoch = last.epoch
        status.best_val_dice = rundir.best_value(rows, "val_dice")
        status.pixel_accuracy = last.val_pixel_accuracy
        status.peak_memory_mb = last.peak_memory_mb
        status.epoch_seconds = last.epoch_seconds
    if final is not None:
        if final.best_val_dice is not None:
            status.best_val_dice = final.best_val_dice
        if status.epochs_total is None:
            status.epochs_total = final.epochs_planned


def tail(path: str | Path, lines: int = 8) -> list[str]:
    """The last ``lines`` non-empty lines of a text file (``[]`` if it does not exist)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return kept[-lines:]


_EXCEPTION_LINE = re.compile(r"^(?:\[rank\d+\]:\s*)?((?:\w+\.)*\w*(?:Error|Exception|Interrupt)\b.*)$")


def failure_reason(stderr_path: str | Path) -> str:
    """Why a job failed, from its stderr: the job's own error line, else the last exception.

    Nothing else counts: a job killed from outside (out of memory, time limit) has neither, and
    its last stderr line is usually some library's notice, not the reason; the scheduler's own
    state and exit code say more then.
    """
    lines = tail(stderr_path, lines=400)
    for line in reversed(lines):
        if line.startswith(ERROR_MARKER):
            return line[len(ERROR_MARKER):].strip()
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line.strip())
        if match:
            return match.group(1)
    return ""


def _exit_reason(exit_code: str) -> str:
    """SLURM's ``ExitCode`` (``code:signal``) in words."""
    code, _, sig = exit_code.partition(":")
    if sig and sig != "0":
        return f"killed by signal {sig}" + (" (out of memory?)" if sig == "9" else "")
    return f"exit code {code}" if code and code != "0" else ""


def _result_state(row: JobRow, index: ExperimentIndex) -> tuple[str, str] | None:
    """State and reason from the result submitit's task 0 pickled, or None before there is one."""
    result = Path(row.stdout).parent / f"{row.job_id}_0_result.pkl"
    if not result.exists():
        return None
    try:
        with open(result, "rb") as handle:
            outcome, payload = pickle.load(handle)
    except Exception:  # a half-written pickle: the job is just finishing
        return "COMPLETING", ""
    if outcome == "success":
        return "COMPLETED", ""
    if index.cancelled(row.job_id, row.submitted_at):
        return "CANCELLED", "cancelled by steelseg-hpc cancel"
    return "FAILED", str(payload).strip().splitlines()[-1] if payload else ""


def _forgotten_state(row: JobRow, index: ExperimentIndex) -> tuple[str, str]:
    """A SLURM job that neither squeue nor sacct knows: accounting is off, or it was purged."""
    known = _result_state(row, index)
    if known is not None:
        return known
    if rundir.read_final(row.run_dir) is not None:
        return "COMPLETED", "SLURM has no record; the run dir's final.json says it finished"
    return "UNKNOWN", "SLURM has no record (accounting off or purged) and the run has no final.json"


def _local_state(row: JobRow, index: ExperimentIndex) -> tuple[str, str]:
    """State and reason of a local-executor job, from its processes and submitit's result."""
    known = _result_state(row, index)
    if known is not None:
        return known
    cancelled = index.cancelled(row.job_id, row.submitted_at)
    if local_jobs.is_alive(row.job_id, row.submitted_at):
        return ("CANCELLING" if cancelled else "RUNNING"), ""
    if cancelled:
        return "CANCELLED", "cancelled by steelseg-hpc cancel"
    return "FAILED", "process gone without a result"


def job_states(rows: list[JobRow], index: ExperimentIndex) -> list[JobStatus]:
    """The scheduler's (or the local process's) view of ``rows``, without their run metrics.

    One ``sacct``/``squeue`` call covers every SLURM job; a job SLURM no longer knows (accounting
    off, or purged) is judged by submitit's result file and the run's ``final.json``, else UNKNOWN.
    Failed jobs get their reason and the tail of their stderr.
    """
    slurm_ids = [row.job_id for row in rows if row.executor == "slurm"]
    records = slurm.query_jobs(slurm_ids) if slurm_ids else {}
    result = []
    for row in rows:
        status = JobStatus(job_id=row.job_id, experiment=row.experiment, arch=row.arch,
                           seed=row.seed, state="UNKNOWN", run_dir=row.run_dir,
                           epochs_total=row.epochs_total, stdout=row.stdout, stderr=row.stderr)
        if row.executor == "slurm":
            record = records.get(row.job_id)
            if record is not None:
                status.state, status.node, status.elapsed = record.state, record.node, record.elapsed
                status.reason, status.exit_code = record.reason, record.exit_code
                status.requeues = list(record.requeues)
            else:
                status.state, status.reason = _forgotten_state(row, index)
        else:
            status.state, status.reason = _local_state(row, index)
            status.node = "local"
        if status.state in PROBLEM_STATES:
            status.stderr_tail = tail(row.stderr)
            status.reason = failure_reason(row.stderr) or status.reason or _exit_reason(status.exit_code)
        result.append(status)
    return result


def collect_status(experiment: str | None = None, index: ExperimentIndex | None = None
                   ) -> list[JobStatus]:
    """Status of every job of ``experiment`` (default: the most recently launched one).

    Raises:
        LaunchError: no index yet, or an unknown experiment name.
    """
    index = index or ExperimentIndex()
    if experiment is None:
        names = index.experiments()
        if not names:
            return []
        experiment = names[0]
    statuses = job_states(index.jobs(experiment), index)
    for status in statuses:
        fill_metrics(status)
    return statuses
