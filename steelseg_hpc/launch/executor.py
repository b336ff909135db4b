"""One executor interface over submitit, for SLURM and for processes on this machine.

:class:`Executor` turns a :class:`~steelseg_hpc.compute.profiles.ClusterProfile` into submitit
parameters once; ``submit`` sends one callable, ``submit_array`` sends many as one SLURM job array
(``executor.batch()``). Both return submitit jobs, whose ``job_id`` and log paths go to the index.

Example:
    >>> from steelseg_hpc.compute.profiles import ClusterProfile
    >>> executor = Executor(ClusterProfile(executor="local"), "/tmp/jobs")  # doctest: +SKIP
    >>> job = executor.submit(sum, [1, 2])                                  # doctest: +SKIP
    >>> job.result()                                                        # doctest: +SKIP
    3
"""
from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from steelseg_hpc.compute.profiles import ClusterProfile
from steelseg_hpc.compute.slurm import not_answering, ride_out
from steelseg_hpc.core.errors import LaunchError


def submitit_parameters(profile: ClusterProfile, job_name: str) -> dict[str, Any]:
    """The ``update_parameters`` keywords for ``profile`` (generic names plus prefixed ones).

    Example:
        >>> params = submitit_parameters(ClusterProfile(partition="gpu", gpus_per_node=2), "x")
        >>> params["tasks_per_node"], params["slurm_partition"]
        (2, 'gpu')
    """
    params: dict[str, Any] = {
        "name": job_name,
        "timeout_min": profile.time_min,
        "nodes": profile.nodes,
        "tasks_per_node": profile.tasks(),
        "cpus_per_task": profile.cpus_per_task,
        "gpus_per_node": profile.gpus_per_node,
        "mem_gb": profile.mem_gb,
    }
    prefix = profile.executor
    if profile.setup:
        params[f"{prefix}_setup"] = list(profile.setup)
    if profile.executor == "slurm":
        optional = {
            "partition": profile.partition,
            "account": profile.account,
            "qos": profile.qos,
            "constraint": profile.constraint,
        }
        params.update({f"slurm_{key}": value for key, value in optional.items() if value})
        params["slurm_array_parallelism"] = profile.array_parallelism
        params["slurm_signal_delay_s"] = profile.signal_delay_s
        if profile.slurm_extra:
            params["slurm_additional_parameters"] = dict(profile.slurm_extra)
    return params


class Executor:
    """Submit callables as jobs with the resources of one cluster profile.

    Args:
        profile: where and with which resources jobs run.
        folder: submitit's job files (pickles, logs) go to ``folder/JOB_ID/``.
        job_name: the SLURM job name.
    """

    def __init__(self, profile: ClusterProfile, folder: str | Path, job_name: str = "steelseg"):
        import submitit

        self.profile = profile
        self.folder = Path(folder).absolute()
        prefix = profile.executor
        init: dict[str, Any] = {f"{prefix}_max_num_timeout": profile.max_requeues}
        if profile.python:
            init[f"{prefix}_python"] = profile.python
        try:
            self._executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=prefix, **init)
            self._executor.update_parameters(**submitit_parameters(profile, job_name))
        except RuntimeError as exc:  # submitit's "Could not detect srun"
            raise LaunchError(f"executor {prefix!r}: {exc}") from None
        except (ValueError, AssertionError) as exc:
            raise LaunchError(f"profile does not translate to submitit parameters: {exc}") from None

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any):
        """Submit ``fn(*args, **kwargs)`` as one job; returns a submitit Job.

        While the controller cannot be reached (restarting, failing over) the submission is sent
        again for up to ``$STEELSEG_SLURM_WAIT_S`` seconds, but only when sbatch could not connect
        at all: a submission that may have reached the controller is never sent twice.
        """
        def once():
            with _submission_errors():
                return self._executor.submit(fn, *args, **kwargs)

        return ride_out(once, "sbatch", never_sent=True)

    def submit_array(self, fns: Sequence[Callable[[], Any]]) -> list:
        """Submit argument-free callables as one job array (one SLURM array task each).

        At most ``profile.array_parallelism`` tasks of the array run at the same time.
        """
        if not fns:
            return []
        if len(fns) == 1:
            return [self.submit(fns[0])]

        def once():
            with _submission_errors():
                with self._executor.batch():
                    return [self._executor.submit(fn) for fn in fns]

        return ride_out(once, "sbatch", never_sent=True)


@contextlib.contextmanager
def _submission_errors() -> Iterator[None]:
    """Turn sbatch's refusal (an exception inside submitit) into a one-line LaunchError."""
    import submitit

    try:
        yield
    except (subprocess.CalledProcessError, submitit.core.utils.UncompletedJobError) as exc:
        # submitit raises FailedJobError(stderr of sbatch) when sbatch exits non-zero.
        detail = getattr(exc, "stderr", None) or str(exc)
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        lines = [line.strip() for line in detail.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else str(exc)
        if not_answering(last) and not not_answering(last, never_sent=True):
            raise LaunchError(f"sbatch got no answer from the controller ({last}); the job may have been "
                              "queued all the same: check squeue before submitting again") from None
        raise LaunchError(f"sbatch refused the job: {last}") from None
    except submitit.core.utils.FailedSubmissionError as exc:
        raise LaunchError(f"submission failed: {str(exc).strip().splitlines()[0]}") from None
