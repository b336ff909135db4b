"""What a rerun of a sweep picks up: trials a killed driver left running, and retries not yet queued.

:class:`Resume` is the part of :class:`~steelseg_hpc.sweeps.driver.SweepDriver` that matches the
study's RUNNING trials with their jobs when a driver starts, and queues the retries a failed
trial was promised (or, with ``--retry-failed``, the failed points; see :mod:`.failures`).

Example:
    >>> InFlight.__dataclass_fields__["reported"].default
    0
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from steelseg_hpc.core.errors import SteelsegError
from steelseg_hpc.core.rundir import RunFiles
from steelseg_hpc.launch import JobHandle, JobRow
from steelseg_hpc.sweeps.scheduler import RETRY_PLANNED, SLOT, Retry  # noqa: F401  (RETRY_PLANNED: re-exported)

@dataclass
class InFlight:
    """A trial whose job has not ended yet."""

    trial: optuna.trial.Trial
    slot: int
    run_dir: Path
    handle: JobHandle
    reported: int = 0  # epochs already reported to Optuna
    stop_requested: bool = False

    @property
    def job(self) -> JobRow:
        """The trial's job as the index recorded it."""
        return self.handle.row


class Resume:
    """Re-attaching and queued retries (mixed into the sweep driver, whose state it uses)."""

    def _reattach(self) -> None:
        """Match every RUNNING trial with its job: follow it, or submit it if it never got one.

        A driver killed between ``ask`` and ``set_user_attr("job_id")`` leaves a trial with some or
        none of its parameters and maybe a job the index already knows (recorded just before the
        kill): the trial asks the space again, which returns the values it has, its enqueued fixed
        values and a draw for the rest, and a job recorded for its run directory is followed, not
        submitted twice.
        """
        for frozen in self._trials():
            if frozen.state != TrialState.RUNNING:
                continue
            trial = optuna.trial.Trial(self.study, frozen._trial_id)
            slot = frozen.user_attrs.get(SLOT, 0)
            job_id = frozen.user_attrs.get("job_id")
            if job_id is None:
                row = self._job_recorded_for(frozen)
                if row is None:
                    self._submit(trial, slot, self.space.suggest(trial))
                    continue
                job_id = row.job_id
                trial.set_user_attr("job_id", job_id)
            else:
                try:
                    row = self.index.find_job(job_id)
                except SteelsegError:
                    self._fail(trial, slot, f"job {job_id} is not in the index")
                    continue
            self.in_flight.append(InFlight(trial, slot, Path(row.run_dir), JobHandle(row, self.index),
                                           reported=len(frozen.intermediate_values),
                                           stop_requested=RunFiles(row.run_dir).stop_request.exists()))
            self.echo(f"trial {frozen.number}: following job {job_id} again")

    def _job_recorded_for(self, frozen: FrozenTrial) -> JobRow | None:
        run_dir = frozen.user_attrs.get("run_dir")
        if run_dir is None:
            return None
        return next((row for row in self.index.jobs(self.spec.name) if row.run_dir == run_dir), None)

    def _enqueue(self, retry: Retry) -> None:
        self.study.enqueue_trial(retry.params, user_attrs=retry.user_attrs)

    def _enqueue_lost_retries(self) -> None:
        for retry in self.scheduler.lost_retries(self._trials()):
            self._enqueue(retry)
            self.echo(f"trial {retry.of}: its retry was not queued before the driver stopped; queued now")

    def _enqueue_failed_points(self) -> None:
        trials = {trial.number: trial for trial in self._trials()}
        for retry in self.scheduler.failed_point_retries(list(trials.values())):
            self._enqueue(retry)
            self.echo(f"trial {retry.of}: failed ({trials[retry.of].user_attrs.get('fail_reason')}); "
                      "running its parameters again (--retry-failed)")
