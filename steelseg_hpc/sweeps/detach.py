"""The sweep driver as a job of its own (``sweep NAME --detach``), and the check that it is the only one.

A sweep has one driver. A driver that runs holds the sweep folder's lock, which refuses a second
one; a detached driver may still be queued, holding nothing yet, so its job is recorded in
``runs/NAME/driver/job.json`` and :func:`check_no_driver` asks its state before another driver,
detached or not, is started.

Example:
    >>> job = DriverJob("sweeps/lora-rank.toml", {"profile": "local"})  # doctest: +SKIP
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import submitit

from steelseg_hpc.compute.run_lock import RunLock, is_stale
from steelseg_hpc.core.errors import LaunchError
from steelseg_hpc.core.io import atomic_write_json
from steelseg_hpc.launch import Executor, ExperimentIndex, JobHandle, JobRow
from steelseg_hpc.sweeps.driver import SweepDriver
from steelseg_hpc.sweeps.guards import existing_study

#: The detached driver's job, under the sweep's folder.
DRIVER_JOB = Path("driver") / "job.json"


def record_driver_job(folder: Path, row: JobRow) -> None:
    atomic_write_json(Path(folder) / DRIVER_JOB, asdict(row))


def check_no_driver(name: str, folder: Path, index: ExperimentIndex) -> None:
    """Refuse to start a driver while another one runs or is queued.

    Raises:
        LaunchError: naming the running driver (its job, or its process) and how to watch or stop it.
    """
    owner = RunLock(folder).read_owner()
    if owner is not None and not is_stale(owner):
        job = f", SLURM job {owner['slurm_job_id']}" if owner.get("slurm_job_id") else ""
        raise LaunchError(f"sweep {name}: its driver is running (pid {owner.get('pid')} on {owner.get('host')}{job}, "
                          f"since {owner.get('since')}); watch it with: steelseg-hpc status {name}")
    try:
        row = JobRow(**json.loads((Path(folder) / DRIVER_JOB).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return  # never detached, or a record from an older version: the lock still guards the study
    driver = JobHandle(row, index)
    if driver.active:
        raise LaunchError(f"sweep {name}: its driver is job {row.job_id} ({row.executor}, {driver.last.state}); "
                          f"its log: {row.stdout}; watch it with: steelseg-hpc status {name}, or stop it first")


def driver_row(name: str, folder: Path, executor: str, job) -> JobRow:
    """The index-style row of a submitted driver job (never put in the index: it trains nothing)."""
    return JobRow(job_id=str(job.job_id), experiment=name, arch="driver", seed=0, run_dir=str(folder),
                  executor=executor, stdout=str(job.paths.stdout), stderr=str(job.paths.stderr),
                  submitted_at=time.time())


class DriverJob(submitit.helpers.Checkpointable):
    """The driver itself as a small CPU job (``sweep --detach``).

    On its time limit submitit requeues it (it is checkpointable, with nothing to save): the
    requeued driver re-attaches to the study like a rerun of the command does.

    Args:
        sweep_file: The sweep TOML.
        options: :meth:`SweepDriver.from_files` keyword arguments (profile, overrides, ...).
    """

    def __init__(self, sweep_file: str, options: dict):
        self.sweep_file, self.options = sweep_file, options

    def __call__(self) -> dict:
        driver = SweepDriver.from_files(self.sweep_file, echo=lambda line: print(line, flush=True), **self.options)
        return driver.run()

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        # The first start queued the failed points' retries: a requeued driver must not queue more.
        return submitit.helpers.DelayedSubmission(DriverJob(self.sweep_file, {**self.options, "retry_failed": False}))


def detach_driver(driver: SweepDriver, options: dict) -> JobRow:
    """Submit ``driver`` as a CPU job of its profile (``sweep --detach``); the driver job's row.

    Args:
        options: The :meth:`SweepDriver.from_files` keyword arguments the driver was made with.

    Raises:
        DataError, ConfigError: the study would be refused (checked now, not in the job, which
            moves old trial directories aside itself, under the lock).
    """
    driver.check_study(existing_study(driver.spec.name, driver.storage_url), set_aside=False)
    profile = driver.profile.model_copy(update={"gpus_per_node": 0, "tasks_per_node": 1, "nodes": 1})
    executor = Executor(profile, driver.folder / "driver", job_name=f"{driver.spec.name}-driver")
    options = {**options, "profile": str(driver.profile_file), "store": str(driver.spec.store)}
    job = executor.submit(DriverJob(str(driver.spec_file), options))
    row = driver_row(driver.spec.name, driver.folder, profile.executor, job)
    record_driver_job(driver.folder, row)
    return row
