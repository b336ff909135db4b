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
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

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


def node_failures(attempts) -> list[str]:
    """The attempts (as :func:`describe_attempt` words them) that ended on a node failure.

    Example:
        >>> node_failures(["node failure on n[1-2] (NODE_FAIL)", "requeued (time limit or preemption signal) (REQUEUED)"])
        ['node failure on n[1-2] (NODE_FAIL)']
    """
    return [attempt for attempt in attempts if attempt.endswith("(NODE_FAIL)")]


def describe_attempt(state: str, node: str) -> str:
    """One earlier attempt of a job in words.

    Example:
        >>> describe_attempt("NODE_FAIL", "n[1-2]")
        'node failure on n[1-2] (NODE_FAIL)'
    """
    words = _ATTEMPT_ENDINGS.get(state, state.lower())
    where = f" on {node}" if node and node not in ("None assigned", "None") else ""
    return f"{words}{where} ({state})"


#: What SLURM's tools print when the controller (or slurmdbd) does not answer: it is restarting,
#: failing over, or overloaded. A query can simply be asked again.
_NOT_ANSWERING = ("unable to contact slurm controller", "socket timed out on send/recv",
                  "connection refused", "unable to connect to database", "zero bytes were transmitted",
                  "slurm_persist_conn_open", "did not answer within")
#: The failures after which a request certainly never reached the controller (so even a
#: submission can be sent again without risking a second job).
_NEVER_SENT = ("connect failure", "connection refused")

T = TypeVar("T")


def controller_wait_s() -> float:
    """How long commands keep asking a controller that does not answer ($STEELSEG_SLURM_WAIT_S, 300 s)."""
    return float(os.environ.get("STEELSEG_SLURM_WAIT_S", "300"))


def not_answering(message: str, never_sent: bool = False) -> bool:
    """Whether ``message`` says the controller did not answer (with ``never_sent``: the request
    certainly never reached it).

    Example:
        >>> not_answering("squeue: error: Unable to contact slurm controller (connect failure)", never_sent=True)
        True
        >>> not_answering("sbatch: error: Invalid partition name specified")
        False
    """
    text = message.lower()
    return any(words in text for words in (_NEVER_SENT if never_sent else _NOT_ANSWERING))


def ride_out(action: Callable[[], T], what: str, never_sent: bool = False, wait_s: float | None = None) -> T:
    """``action()``, asked again while SLURM does not answer, for up to ``wait_s`` seconds.

    One line says the controller is not answering and for how long the command keeps asking,
    one more when it answers again; after ``wait_s`` the last ``LaunchError`` is raised.

    Args:
        action: raises :class:`LaunchError` on failure.
        what: the command, for the lines (e.g. ``"squeue"``).
        never_sent: retry only failures where the request never reached the controller (a
            submission, which must not be queued twice).
    """
    wait_s = controller_wait_s() if wait_s is None else wait_s
    started, pause = time.monotonic(), 1.0
    while True:
        try:
            result = action()
        except LaunchError as exc:
            waited = time.monotonic() - started
            if not not_answering(str(exc), never_sent) or waited >= wait_s:
                raise
            if pause == 1.0:  # once per outage
                detail = str(exc).rsplit("error: ", 1)[-1] if "error: " in str(exc) else str(exc).split(": ", 1)[-1]
                log.warning("SLURM is not answering (%s: %s); asking again for up to %.0f s", what, detail, wait_s)
            time.sleep(min(pause, max(0.0, wait_s - waited)))
            pause = min(pause * 2, 15.0)
            continue
        if pause > 1.0:
            log.warning("SLURM answers again (%s, after %.0f s)", what, time.monotonic() - started)
        return result


def _run(args: list[str], timeout: float = 30) -> str:
    """Run a SLURM query and return its output, riding out a controller that does not answer."""
    return ride_out(lambda: _run_once(args, timeout), args[0])


def _run_once(args: list[str], timeout: float = 30) -> str:
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
        _run_once(["sinfo", "-h", "-o", "%P"], timeout=15)  # a yes/no question: not worth a wait
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
