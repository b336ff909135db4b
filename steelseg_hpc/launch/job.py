"""The training job that runs on a node: one process per task, all calling the training engine.

:class:`TrainingJob` is a submitit ``Checkpointable`` that carries the run's resolved
:class:`~steelseg_hpc.training.RunConfig` (resolved once, at submission). Every task finds its
rank and rendezvous through the engine's single rule
(:func:`~steelseg_hpc.training.distributed.resolve_dist_env`, submitit's
``TorchDistributedEnvironment`` inside a job). When SLURM warns a job (USR2 at ``signal_delay_s``
before its time limit, or on preemption), every task saves a mid-epoch checkpoint at the next
optimiser step; then submitit's handler in task 0 calls :meth:`TrainingJob.checkpoint`, requeues
the job and exits, and the requeued job resumes from that checkpoint. When training has stopped
(completed, patience, time budget), task 0 evaluates the splits the experiment asks for; a job
requeued during that evaluation finds training done and evaluates again.

Example:
    >>> from steelseg_hpc.training import load_run_config
    >>> job = TrainingJob("runs/x/unet3plus-s0", load_run_config(None, ["epochs=2"]))
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

from steelseg_hpc.inference import evaluate_run
from steelseg_hpc.launch.status import ERROR_MARKER
from steelseg_hpc.training import RunConfig, StopRequest, TrainingPreempted, train
from steelseg_hpc.training.distributed import resolve_dist_env


class TrainingJob(submitit.helpers.Checkpointable):
    """Train ``config`` into ``run_dir`` (resuming if it holds a run of the same config).

    Args:
        run_dir: where the engine writes config, metrics, checkpoints and logs.
        config: the run's resolved configuration (architecture, seed and store included).
        evaluate: splits to evaluate on whole images once training has stopped (task 0 only;
            flip TTA when the config's ``eval.tta`` is on).
    """

    def __init__(self, run_dir: str | Path, config: RunConfig, evaluate: tuple[str, ...] = ()) -> None:
        self.run_dir = str(run_dir)
        self.config = config
        self.evaluate = tuple(evaluate)

    def describe(self) -> str:
        return f"{self.config.model.name} seed {self.config.seed} -> {self.run_dir}"

    def __call__(self) -> dict:
        env = resolve_dist_env()
        print(f"[steelseg] {self.describe()} | rank {env.rank}/{env.world_size} on "
              f"{socket.gethostname()} | job {os.environ.get('SLURM_JOB_ID', 'local')}", flush=True)
        # Installed first thing, on every task: from here on a signal stops training at a step.
        with StopRequest(signals=(requeue_signal(), signal.SIGTERM)) as stop:
            try:
                summary = train(self.config, Path(self.run_dir), stop=stop)
                if env.is_main:
                    for split in self.evaluate:
                        result = evaluate_run(Path(self.run_dir), split=split)
                        miou = result["overall"]["miou"]
                        print(f"[steelseg] evaluated {split}{' with flip TTA' if result['tta'] else ''}: "
                              f"mIoU {'n/a' if miou is None else format(miou, '.4f')} -> "
                              f"{result['output_dir']}", flush=True)
                return summary
            except TrainingPreempted as exc:
                return self._after_preemption(exc, stop, is_main=env.is_main)
            except Exception as exc:
                # One greppable line ahead of submitit's traceback: `status` shows it as the reason.
                message = " ".join(str(exc).split())
                print(f"{ERROR_MARKER} {type(exc).__name__}: {message}", file=sys.stderr, flush=True)
                raise

    def _after_preemption(self, exc: TrainingPreempted, stop: StopRequest, is_main: bool) -> dict:
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
