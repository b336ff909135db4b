"""Thin wrappers over SLURM's command-line tools (sinfo, squeue, sacct, scancel).

Everything here asks the cluster; nothing writes to it except :func:`cancel`. Job ids are strings,
``"12"`` for a plain job and ``"12_3"`` for array task 3.

Example:
    >>> if slurm_available():  # doctest: +SKIP
    ...     print(sorted(partitions()))
    ['gpu']
"""
from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass

from steelseg_hpc.core.errors import LaunchError

log = logging.getLogger(__name__)

#: States after which a job never runs again.
TERMINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
     "DEADLINE", "PREEMPTED", "REVOKED"}
)


@dataclass(frozen=True)
class NodeInfo:
    """One node as ``sinfo`` reports it."""

    name: str
    cpus: int
    memory_mb: int
    gpus: int


@dataclass
class JobRecord:
    """What SLURM knows about one job (from squeue while queued or running, else sacct)."""

    job_id: str
    state: str
    node: str = ""
    elapsed: str = ""
    exit_code: str = ""
    reason: str = ""
    #: Earlier attempts of a requeued job, oldest first, in words (e.g. "node failure on n[1-2]").
    requeues: tuple[str, ...] = ()


#: Why an attempt of a job ended and it ran again, by the state ``sacct -D`` records for it.
_ATTEMPT_ENDINGS = {"NODE_FAIL": "node failure", "REQUEUED": "requeued (time limit or preemption signal)",
                    "PREEMPTED": "preempted", "BOOT_FAIL": "node failed to boot", "FAILED": "failed"}


def describe_attempt(state: str, node: str) -> str:
    """One earlier attempt of a job in words.

    Example:
        >>> describe_attempt("NODE_FAIL", "n[1-2]")
        'node failure on n[1-2] (NODE_FAIL)'
    """
    words = _ATTEMPT_ENDINGS.get(state, state.lower())
    where = f" on {node}" if node and node not in ("None assigned", "None") else ""
    return f"{words}{where} ({state})"


def _run(args: list[str], timeout: float = 30) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise LaunchError(f"{args[0]} not found: is this a SLURM login node?") from None
    except subprocess.TimeoutExpired:
        raise LaunchError(f"{' '.join(args)} did not answer within {timeout:.0f} s") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise LaunchError(f"{' '.join(args[:2])} failed: {message[-1] if message else done.returncode}")
    return done.stdout


def slurm_available() -> bool:
    """True when ``sinfo`` exists and the controller answers."""
    if shutil.which("sinfo") is None:
        return False
    try:
        _run(["sinfo", "-h", "-o", "%P"], timeout=15)
    except LaunchError:
        return False
    return True


def parse_gpu_count(gres: str) -> int:
    """GPUs in a ``sinfo %G`` / ``scontrol`` Gres string.

    Example:
        >>> parse_gpu_count("gpu:a100:4(S:0-1),mps:100")
        4
        >>> parse_gpu_count("(null)")
        0
    """
    return sum(int(n) for n in re.findall(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)", gres))


def partitions() -> dict[str, list[NodeInfo]]:
    """Every partition with the nodes in it."""
    result: dict[str, list[NodeInfo]] = {}
    for line in _run(["sinfo", "-h", "-N", "-o", "%R|%N|%c|%m|%G"]).splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5:
            continue
        partition, node, cpus, memory, gres = parts
        info = NodeInfo(node, int(cpus.rstrip("+")), int(memory.rstrip("+")), parse_gpu_count(gres))
        result.setdefault(partition, []).append(info)
    return result


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def _base_state(state: str) -> str:
    # sacct writes "CANCELLED by 0"; squeue may add "+" for extra flags.
    return state.split()[0].rstrip("+") if state else "UNKNOWN"


def query_jobs(job_ids: list[str]) -> dict[str, JobRecord]:
    """SLURM's view of ``job_ids``: squeue for live jobs, sacct for the rest.

    Jobs SLURM no longer knows are missing from the result: purged from accounting, or ended on
    a cluster whose ``sacct`` does not work (accounting disabled), which is logged once.
    """
    if not job_ids:
        return {}
    records: dict[str, JobRecord] = {}
    wanted = set(job_ids)
    # Array tasks are accounted under their own id ("12_3"), but sacct -j wants the parent id too.
    query = sorted({job_id.split("_")[0] for job_id in job_ids} | wanted)
    try:
        # -D lists every attempt of a requeued job, oldest first; the last is the current one.
        out = _run(["sacct", "-X", "-D", "-P", "-n", "-j", ",".join(query),
                    "-o", "JobID,State,NodeList,Elapsed,ExitCode,Reason"])
    except LaunchError as exc:
        # Clusters without accounting ("Slurm accounting storage is disabled") still have squeue;
        # ended jobs are then absent and callers judge them by their run directory.
        _warn_once(f"{exc}; ended jobs are judged by their run directories")
        out = ""
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) >= 6 and parts[0] in wanted:
            job_id, state, node, elapsed, exit_code, reason = parts[:6]
            earlier = records.get(job_id)
            requeues = () if earlier is None else (*earlier.requeues, describe_attempt(earlier.state, earlier.node))
            records[job_id] = JobRecord(job_id, _base_state(state), node, elapsed, exit_code,
                                        "" if reason == "None" else reason, requeues)
    # squeue is authoritative while a job is pending or running (sacct lags by about a second).
    try:
        live = _run(["squeue", "-h", "-r", "-j", ",".join(query), "-o", "%i|%T|%N|%M|%r"])
    except LaunchError:
        live = ""  # squeue rejects ids that all finished long ago
    for line in live.splitlines():
        parts = line.split("|")
        if len(parts) == 5 and parts[0] in wanted:
            job_id, state, node, elapsed, reason = parts
            accounted = records.get(job_id, JobRecord(job_id, ""))
            records[job_id] = JobRecord(job_id, _base_state(state), node, elapsed, accounted.exit_code,
                                        "" if reason == "None" else reason, accounted.requeues)
    return records


def cancel(job_ids: list[str], signal: str | None = None) -> None:
    """``scancel`` the jobs, or only send them ``signal`` (e.g. ``"USR2"``) when given."""
    if not job_ids:
        return
    args = ["scancel"] + ([f"--signal={signal}"] if signal else []) + list(job_ids)
    _run(args)
