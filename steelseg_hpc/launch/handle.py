"""A submitted job, followed from any shell: its state, whether it has ended, waiting, cancelling.

A :class:`JobHandle` is to an indexed job what submitit's ``Job`` is to the job it just submitted
(``state``, ``done()``, ``wait()``, ``cancel()``), except that it is found again through the
experiment index, so a new shell, the demo and the sweep driver ask the same questions the same way.
Whether a job has ended is decided here and nowhere else: SLURM's terminal states, a local job's
process and result (see :func:`~steelseg_hpc.launch.status.job_states`), and a SLURM job that stays
unknown to ``squeue`` and ``sacct`` for longer than :data:`UNKNOWN_GRACE_S` (purged, or accounting
is off and the job is gone), which is treated as ended so that nothing waits on it for ever.

:func:`submit_indexed` is the one way jobs are queued: it submits them and records every job in the
index before returning, so no job runs without the row that finds it again.

Example:
    >>> handles = [JobHandle(row) for row in ExperimentIndex().jobs("smoke")]  # doctest: +SKIP
    >>> statuses = wait(handles, poll_s=5.0)  # doctest: +SKIP
    >>> [(s.job_id, s.state) for s in statuses]  # doctest: +SKIP
    [('41_0', 'COMPLETED'), ('41_1', 'FAILED')]
"""
from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from steelseg_hpc.compute import slurm
from steelseg_hpc.compute.slurm import TERMINAL_STATES
from steelseg_hpc.launch import local_jobs
from steelseg_hpc.launch.index import ExperimentIndex, JobRow
from steelseg_hpc.launch.status import JobStatus, fill_metrics, job_states

if TYPE_CHECKING:  # the executor and the job import submitit and the training engine
    from steelseg_hpc.launch.executor import Executor
    from steelseg_hpc.launch.job import TrainingJob

log = logging.getLogger(__name__)

#: How long a SLURM job may be unknown to squeue and sacct before it counts as ended. sacct lags a
#: second or two behind a fresh submission, and a busy slurmdbd longer.
UNKNOWN_GRACE_S = 120.0

#: The state of a job that is gone without a record (see :data:`UNKNOWN_GRACE_S`).
UNKNOWN = "UNKNOWN"


def has_ended(state: str) -> bool:
    """Whether a job in ``state`` never runs again.

    Example:
        >>> has_ended("COMPLETED"), has_ended("RUNNING"), has_ended("UNKNOWN")
        (True, False, False)
    """
    return state in TERMINAL_STATES


class JobHandle:
    """One indexed job.

    Args:
        row: the job as the index recorded it.
        index: the index it is recorded in (cancellations are recorded there too).
        unknown_grace_s: see :data:`UNKNOWN_GRACE_S` (its value when the handle is made).
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(self, row: JobRow, index: ExperimentIndex | None = None,
                 unknown_grace_s: float | None = None, clock: Callable[[], float] = time.monotonic):
        self.row = row
        self.index = index or ExperimentIndex()
        self.unknown_grace_s = UNKNOWN_GRACE_S if unknown_grace_s is None else unknown_grace_s
        self._clock = clock
        self._unknown_since: float | None = None
        self.last: JobStatus | None = None

    @property
    def job_id(self) -> str:
        return self.row.job_id

    def __repr__(self) -> str:
        state = self.last.state if self.last is not None else "not asked yet"
        return f"JobHandle({self.job_id}, {self.row.arch} seed {self.row.seed}, {state})"

    def observe(self, status: JobStatus) -> None:
        """Take ``status`` as the job's latest state (what :func:`refresh` does for many jobs)."""
        if status.state == UNKNOWN:
            if self._unknown_since is None:
                self._unknown_since = self._clock()
        else:
            self._unknown_since = None
        self.last = status

    def status(self, with_progress: bool = False) -> JobStatus:
        """Ask the scheduler (or the local process) now; ``with_progress`` adds the run's metrics."""
        return refresh([self], with_progress)[0]

    def state(self) -> str:
        """The job's state now (SLURM's name for it, or the local executor's)."""
        return self.status().state

    @property
    def ended(self) -> bool:
        """Whether the job will never run again, as of the last state asked (asked now if never)."""
        if self.last is None:
            self.status()
        assert self.last is not None
        if has_ended(self.last.state):
            return True
        return (self.last.state == UNKNOWN and self._unknown_since is not None
                and self._clock() - self._unknown_since >= self.unknown_grace_s)

    @property
    def active(self) -> bool:
        """Whether the job is known to be queued or running, as of the last state asked.

        A job the scheduler has no record of is not: it does not hold its run directory.
        """
        return not self.ended and self.last.state != UNKNOWN

    def wait(self, poll_s: float = 5.0, timeout_s: float | None = None) -> JobStatus:
        """Block until the job has ended; its last status (see :func:`wait`)."""
        return wait([self], poll_s=poll_s, timeout_s=timeout_s)[0]

    def cancel(self, sig: signal.Signals | None = None) -> bool:
        """Cancel the job (or only send it ``sig``); False when it had already ended."""
        return bool(cancel_handles([self], sig).acted)


def handles_of(experiment: str, index: ExperimentIndex | None = None) -> list[JobHandle]:
    """A handle for every job of ``experiment`` (the newest job per run directory)."""
    index = index or ExperimentIndex()
    return [JobHandle(row, index) for row in index.jobs(experiment)]


def refresh(handles: Sequence[JobHandle], with_progress: bool = False) -> list[JobStatus]:
    """Ask for the state of every job in one scheduler call; each handle keeps what it was told.

    Args:
        with_progress: also read each run directory (epoch, best val Dice, memory), as
            ``status`` shows it.
    """
    by_index: dict[int, list[JobHandle]] = {}
    for handle in handles:
        by_index.setdefault(id(handle.index), []).append(handle)
    statuses: dict[int, JobStatus] = {}
    for group in by_index.values():
        for handle, status in zip(group, job_states([h.row for h in group], group[0].index)):
            if with_progress:
                fill_metrics(status)
            handle.observe(status)
            statuses[id(handle)] = status
    return [statuses[id(handle)] for handle in handles]


def wait(handles: Sequence[JobHandle], poll_s: float = 5.0, timeout_s: float | None = None,
         on_poll: Callable[[list[JobStatus]], None] | None = None, with_progress: bool = False
         ) -> list[JobStatus]:
    """Block until every job has ended; their last statuses.

    Args:
        poll_s: seconds between scheduler queries.
        timeout_s: give up after this long and return the statuses as they are (None: never).
        on_poll: called with the statuses after every query (``launch --wait`` redraws its table).
        with_progress: see :func:`refresh`.
    """
    started = time.monotonic()
    while True:
        statuses = refresh(handles, with_progress)
        if on_poll is not None:
            on_poll(statuses)
        if all(handle.ended for handle in handles):
            return statuses
        if timeout_s is not None and time.monotonic() - started >= timeout_s:
            return statuses
        time.sleep(poll_s)


@dataclass(frozen=True)
class CancelOutcome:
    """What ``cancel`` did: the jobs it acted on, and those it left alone because they had ended."""

    acted: list[JobRow]
    ended: dict[str, str]  # job id -> its final state


def cancel_handles(handles: Sequence[JobHandle], sig: signal.Signals | None = None) -> CancelOutcome:
    """Cancel the jobs that have not ended (one scheduler query, one ``scancel``); or only signal them.

    On SLURM this is ``scancel`` (every step of the job gets the signal). A local job's training
    processes get SIGTERM (they save at the next optimiser step and stop) and the job shows as
    CANCELLED. Jobs that have already ended are left alone: no signal (a local job's pid may
    belong to another process by now) and no cancellation on record (a FAILED job stays FAILED).
    """
    refresh(handles)
    ended = {handle.job_id: handle.last.state for handle in handles if handle.ended}
    acting = [handle for handle in handles if handle.job_id not in ended]
    slurm_ids = [handle.job_id for handle in acting if handle.row.executor == "slurm"]
    if slurm_ids:
        slurm.cancel(slurm_ids, signal=sig.name.removeprefix("SIG") if sig else None)
    for handle in acting:
        if handle.row.executor == "local":
            local_jobs.signal_job(handle.job_id, sig or signal.SIGTERM, handle.row.submitted_at)
        if sig is None:
            handle.index.record_cancellation(handle.job_id, "TERM")
    return CancelOutcome([handle.row for handle in acting], ended)


def submit_indexed(executor: Executor, jobs: Sequence[TrainingJob], experiment: str,
                   index: ExperimentIndex, on_accepted: Callable[[], None] | None = None
                   ) -> list[JobHandle]:
    """Submit ``jobs`` (one job array on SLURM) and record each in ``index`` under ``experiment``.

    Args:
        on_accepted: called once the scheduler has accepted the jobs, before they are recorded
            (``launch`` records its experiment then, so a refused submission leaves no trace).

    Returns:
        One handle per job, in the order of ``jobs``.
    """
    submitted = executor.submit_array(list(jobs))
    if on_accepted is not None:
        on_accepted()
    handles = []
    for job, queued in zip(jobs, submitted):
        row = JobRow(job_id=str(queued.job_id), experiment=experiment, arch=job.config.model.name,
                     seed=job.config.seed, run_dir=job.run_dir, executor=executor.profile.executor,
                     stdout=str(queued.paths.stdout), stderr=str(queued.paths.stderr),
                     epochs_total=job.config.epochs)
        handles.append(JobHandle(index.record_job(row), index))
        log.info("submitted %s as job %s", job.describe(), row.job_id)
    return handles
