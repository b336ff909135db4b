"""Act on submitted jobs from any shell: cancel them, read their logs.

Example:
    >>> cancelled = cancel("smoke")  # every job of the experiment  # doctest: +SKIP
    >>> print(job_logs("41_0")["stderr"])  # doctest: +SKIP
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

from steelseg_hpc.core.errors import LaunchError
from steelseg_hpc.compute import slurm
from steelseg_hpc.launch.index import ExperimentIndex, JobRow


def resolve_target(target: str, index: ExperimentIndex) -> list[JobRow]:
    """The jobs ``target`` names: an experiment's jobs, or one job id from the index."""
    if index.is_experiment(target):
        return index.jobs(target)
    return [index.find_job(target)]


def cancel(target: str, index: ExperimentIndex | None = None, signal_name: str | None = None
           ) -> list[JobRow]:
    """Cancel an experiment's jobs or one job (``scancel``; SIGTERM for local jobs).

    Args:
        target: an experiment name or a job id.
        signal_name: only send this signal instead of cancelling (``"USR2"`` asks the jobs
            to checkpoint and requeue, as a preemption would).

    Returns:
        The index rows of the jobs acted on.
    """
    index = index or ExperimentIndex()
    rows = resolve_target(target, index)
    slurm_ids = [row.job_id for row in rows if row.executor == "slurm"]
    if slurm_ids:
        slurm.cancel(slurm_ids, signal=signal_name)
    for row in rows:
        if row.executor == "local":
            _signal_local(row.job_id, signal_name)
    return rows


def _signal_local(pid: str, signal_name: str | None) -> None:
    sig = getattr(signal, f"SIG{signal_name}") if signal_name else signal.SIGTERM
    try:
        os.kill(int(pid), sig)
    except ProcessLookupError:
        pass  # already finished
    except (ValueError, PermissionError) as exc:
        raise LaunchError(f"cannot signal local job {pid}: {exc}") from None


def job_logs(job_id: str, index: ExperimentIndex | None = None, lines: int | None = None
             ) -> dict[str, str]:
    """The job's stdout and stderr (whole, or the last ``lines`` lines), and where they are.

    Raises:
        LaunchError: the job is not in the index.
    """
    index = index or ExperimentIndex()
    row = index.find_job(job_id)
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
