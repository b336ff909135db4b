"""Act on submitted jobs from any shell: cancel them (or only signal them), read their logs.

Example:
    >>> outcome = cancel("smoke")  # every job of the experiment that has not ended  # doctest: +SKIP
    >>> [row.job_id for row in outcome.acted], outcome.ended  # doctest: +SKIP
    (['41_1'], {'41_0': 'COMPLETED'})
    >>> print(job_logs("41_0")["stderr"])  # doctest: +SKIP
"""
from __future__ import annotations

import signal
from pathlib import Path

from steelseg_hpc.core.errors import LaunchError
from steelseg_hpc.launch.handle import CancelOutcome, JobHandle, cancel_handles
from steelseg_hpc.launch.index import ExperimentIndex, JobRow

#: Signals ``cancel --signal`` may send: USR2 checkpoints and requeues (a simulated preemption),
#: TERM checkpoints and stops, INT and KILL stop without a checkpoint, USR1 and HUP are passed on.
SIGNALS = ("USR2", "TERM", "INT", "KILL", "USR1", "HUP")


def resolve_target(target: str, index: ExperimentIndex) -> list[JobRow]:
    """The jobs ``target`` names: an experiment's jobs, or one job id from the index."""
    if index.is_experiment(target):
        return index.jobs(target)
    try:
        return [index.find_job(target)]
    except LaunchError:
        known = ", ".join(index.experiments()) if index.path.exists() else ""
        raise LaunchError(f"{target!r} is neither an experiment nor a job id in {index.path} "
                          f"(experiments: {known or 'none'})") from None


def parse_signal(name: str) -> signal.Signals:
    """``"USR2"``, ``"SIGUSR2"`` or ``"usr2"`` -> ``signal.SIGUSR2``; anything else is refused."""
    short = name.upper().removeprefix("SIG")
    if short not in SIGNALS:
        raise LaunchError(f"--signal {name}: unknown or not allowed; choose one of {', '.join(SIGNALS)}")
    return signal.Signals[f"SIG{short}"]


def cancel(target: str, index: ExperimentIndex | None = None, signal_name: str | None = None
           ) -> CancelOutcome:
    """Cancel an experiment's jobs or one job; or only send them a signal (see
    :func:`~steelseg_hpc.launch.handle.cancel_handles`).

    Args:
        target: an experiment name or a job id.
        signal_name: only send this signal instead of cancelling (``"USR2"`` asks the jobs
            to checkpoint and requeue, as a preemption would).
    """
    index = index or ExperimentIndex()
    sig = parse_signal(signal_name) if signal_name else None  # a bad name is refused before any lookup
    return cancel_handles([JobHandle(row, index) for row in resolve_target(target, index)], sig)


def job_logs(job_id: str, index: ExperimentIndex | None = None, lines: int | None = None
             ) -> dict[str, str]:
    """The job's stdout and stderr (whole, or the last ``lines`` lines), and where they are.

    Raises:
        LaunchError: the job is not in the index.
    """
    index = index or ExperimentIndex()
    try:
        row = index.find_job(job_id)
    except LaunchError:
        if not index.is_experiment(job_id):
            raise
        jobs = ", ".join(f"{job.job_id} ({job.arch} seed {job.seed})" for job in index.jobs(job_id))
        raise LaunchError(f"{job_id!r} is an experiment; logs shows one job: {jobs or 'it has none'}") from None
    result = {"stdout_path": row.stdout, "stderr_path": row.stderr}
    for name in ("stdout", "stderr"):
        path = Path(getattr(row, name))
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""  # the job has not started yet
        if lines is not None:
            text = "\n".join(text.splitlines()[-lines:])
        result[name] = text
    return result
