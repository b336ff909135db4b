"""The training job that runs on a node: one process per task, all calling the training engine.

:class:`TrainingJob` is a submitit ``Checkpointable``. When SLURM warns a job (USR2 at
``signal_delay_s`` before its time limit, or on preemption), submitit calls
:meth:`TrainingJob.checkpoint` in task 0, requeues the job and exits. The engine writes a
checkpoint at the end of every epoch and ``train`` resumes from the latest one, so the requeued
job carries on from the last finished epoch; nothing from the interrupted process is pickled.

Example:
    >>> job = TrainingJob("unet3plus", 0, "store.zarr", None, ("epochs=2",), "runs/x/unet3plus-s0")
    >>> job.describe()
    'unet3plus seed 0 -> runs/x/unet3plus-s0'
"""
from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import submitit

#: Prefix of the line a failing job writes to stderr; ``status`` reports the text after it.
ERROR_MARKER = "[steelseg] job failed:"


def distributed_env() -> dict[str, str]:
    """torch.distributed variables for this task, from SLURM (or submitit's local executor).

    MASTER_ADDR is the job's first node; MASTER_PORT comes from the job id through the engine's
    :func:`~steelseg_hpc.training.distributed.job_port`, so a requeued job reuses its own port.

    Example:
        >>> env = distributed_env()  # doctest: +SKIP
        >>> env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]  # doctest: +SKIP
        ('1', '2', '1')
    """
    try:
        job_env = submitit.JobEnvironment()
        rank, local_rank, world = job_env.global_rank, job_env.local_rank, job_env.num_tasks
        hosts = job_env.hostnames
    except RuntimeError:  # not inside a submitit job: a single process
        rank, local_rank, world, hosts = 0, 0, 1, [socket.gethostname()]
    from steelseg_hpc.training.distributed import job_port

    # the local executor has no SLURM job id: its tasks share the submitting parent's pid
    port = job_port(os.environ.get("SLURM_JOB_ID") or os.getppid())
    local_world = max(1, world // max(1, len(hosts)))
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(local_rank),
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(local_world),
        "MASTER_ADDR": hosts[0] if len(hosts) > 1 else "127.0.0.1",
        "MASTER_PORT": str(port),
    }


class TrainingJob(submitit.helpers.Checkpointable):
    """Train one architecture with one seed into ``run_dir`` (resuming if it holds a run).

    Args:
        arch: registry name of the architecture.
        seed: the run's seed.
        store: the Zarr store to train on.
        run_config: a run config TOML, or ``None`` for the engine's defaults.
        overrides: ``KEY=VALUE`` run-config overrides.
        run_dir: where the engine writes config, metrics, checkpoints and logs.
    """

    def __init__(
        self,
        arch: str,
        seed: int,
        store: str | Path,
        run_config: str | Path | None,
        overrides: tuple[str, ...] | list[str],
        run_dir: str | Path,
    ) -> None:
        self.arch = arch
        self.seed = seed
        self.store = str(store)
        self.run_config = str(run_config) if run_config else None
        self.overrides = tuple(overrides)
        self.run_dir = str(run_dir)

    def describe(self) -> str:
        return f"{self.arch} seed {self.seed} -> {self.run_dir}"

    def load_config(self) -> Any:
        """The engine's resolved run config for this job (raises ConfigError on bad overrides)."""
        from steelseg_hpc.training import load_run_config

        # The experiment's seed comes last so it wins over any seed in the shared overrides.
        overrides = [*self.overrides, f"seed={self.seed}"]
        return load_run_config(self.run_config, overrides, arch=self.arch, store=self.store)

    def __call__(self) -> dict:
        env = distributed_env()
        os.environ.update(env)
        print(
            f"[steelseg] {self.describe()} | rank {env['RANK']}/{env['WORLD_SIZE']} on "
            f"{socket.gethostname()} | job {os.environ.get('SLURM_JOB_ID', 'local')}",
            flush=True,
        )
        from steelseg_hpc.training import train
        from steelseg_hpc.training.preemption import StopRequest, TrainingPreempted

        # Installed first thing, on every task: from here on a signal stops training at a step.
        with StopRequest(signals=(requeue_signal(), signal.SIGTERM)) as stop:
            try:
                return train(self.load_config(), Path(self.run_dir), stop=stop)
            except TrainingPreempted as exc:
                return self._after_preemption(exc, stop, is_main=env["RANK"] == "0")
            except Exception as exc:
                # One greppable line ahead of submitit's traceback: `status` shows it as the reason.
                message = " ".join(str(exc).split())
                print(f"{ERROR_MARKER} {type(exc).__name__}: {message}", file=sys.stderr, flush=True)
                raise

    def _after_preemption(self, exc: Any, stop: Any, is_main: bool) -> dict:
        """Requeue through submitit after its requeue signal; exit after anything else.

        Args:
            exc: The ``TrainingPreempted`` raised by ``train`` (its ``signal`` is the one any task
                received, so every task takes the same branch).
            stop: The installed ``StopRequest`` (it holds submitit's handlers).
            is_main: Whether this is task 0.

        Returns:
            On tasks other than 0, which submitit's handler leaves running, a record of the stop.
        """
        if is_main:
            print(f"[steelseg] {exc}", file=sys.stderr, flush=True)
        if exc.signal == requeue_signal() and stop.hand_over(exc.signal):
            # Task 0 does not get here: submitit's handler requeued the job and exited.
            return {"preempted": True, "checkpoint": exc.checkpoint}
        # SIGTERM: SLURM is cancelling or killing the job. The checkpoint is safe; do not requeue.
        sys.exit(128 + int(exc.signal))

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit in task 0 on USR2: requeue this same job.

        By the time submitit calls this, every task has saved a mid-epoch checkpoint (see the
        module docstring), and ``train`` in the requeued job resumes from it; so there is no state
        to save here and the job object itself is all that is pickled. It is also what submitit
        calls when USR2 arrives before :meth:`__call__` has installed its handler.
        """
        print(f"[steelseg] signal received: requeueing {self.describe()}", file=sys.stderr,
              flush=True)
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def requeue_signal() -> signal.Signals:
    """The signal submitit treats as "checkpoint and requeue" (USR2 unless configured otherwise)."""
    try:
        return signal.Signals(submitit.JobEnvironment._usr_sig())
    except (AttributeError, RuntimeError, ValueError):  # a submitit without this private helper
        return signal.SIGUSR2
