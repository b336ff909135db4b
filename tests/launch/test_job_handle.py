"""The job handle: the one place that decides whether a job has ended, waits for it and cancels it.

Local jobs are real processes of the local executor; the SLURM job here is one the scheduler has
never heard of (no cluster needed: without squeue/sacct it is unknown too).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from steelseg_hpc.cli import main
from steelseg_hpc.compute.profiles import ClusterProfile
from steelseg_hpc.launch import handle as handle_module
from steelseg_hpc.launch.executor import Executor
from steelseg_hpc.launch.handle import JobHandle, has_ended, refresh, wait
from steelseg_hpc.launch.index import ExperimentIndex, JobRow


def _local_job(tmp_path: Path, index: ExperimentIndex, seconds: float, name: str = "e") -> JobHandle:
    queued = Executor(ClusterProfile(executor="local"), tmp_path / "jobs").submit(time.sleep, seconds)
    row = index.record_job(JobRow(str(queued.job_id), name, "unet3plus", 0, str(tmp_path / "run"), "local",
                                  str(queued.paths.stdout), str(queued.paths.stderr), 1))
    return JobHandle(row, index)


def _vanished_slurm_job(index: ExperimentIndex, name: str = "gone") -> JobRow:
    # An id far beyond any this cluster has given: squeue and sacct know nothing of it.
    return index.record_job(JobRow("987654321", name, "unet3plus", 0, "/nonexistent/run", "slurm",
                                   "/nonexistent/out", "/nonexistent/err", 1))


@pytest.mark.parametrize("state, ended", [("COMPLETED", True), ("FAILED", True), ("OUT_OF_MEMORY", True),
                                          ("CANCELLED", True), ("PENDING", False), ("RUNNING", False),
                                          ("COMPLETING", False), ("CANCELLING", False), ("UNKNOWN", False)])
def test_has_ended_is_true_only_for_states_a_job_never_leaves(state, ended):
    assert has_ended(state) is ended


def test_a_local_job_is_active_until_it_ends_and_wait_returns_its_last_state(tmp_path):
    index = ExperimentIndex(tmp_path / "index.sqlite")
    index.record_experiment("e", tmp_path, None, None, "local")
    job = _local_job(tmp_path, index, seconds=1.0)
    assert job.state() in ("RUNNING", "COMPLETED")
    final = job.wait(poll_s=0.2, timeout_s=60)
    assert final.state == "COMPLETED" and job.ended and not job.active
    polled = []
    assert wait([job], poll_s=0.2, on_poll=polled.append)[0].state == "COMPLETED" and len(polled) == 1


def test_cancel_stops_a_running_local_job_and_leaves_an_ended_one_alone(tmp_path):
    index = ExperimentIndex(tmp_path / "index.sqlite")
    index.record_experiment("e", tmp_path, None, None, "local")
    job = _local_job(tmp_path, index, seconds=120.0)
    assert job.cancel() is True
    assert job.wait(poll_s=0.2, timeout_s=60).state == "CANCELLED"
    assert job.cancel() is False  # ended: no signal to a pid that may be another process by now


def test_a_job_the_scheduler_never_knew_ends_after_the_grace_and_not_before(tmp_path):
    index = ExperimentIndex(tmp_path / "index.sqlite")
    now = [0.0]
    job = JobHandle(_vanished_slurm_job(index), index, unknown_grace_s=60.0, clock=lambda: now[0])
    assert job.state() == "UNKNOWN" and not job.ended and not job.active
    now[0] = 59.0
    refresh([job])
    assert not job.ended
    now[0] = 60.0
    refresh([job])
    assert job.ended


def test_status_watch_ends_on_a_job_slurm_forgot_instead_of_waiting_for_ever(tmp_path, monkeypatch):
    index_path = tmp_path / "index.sqlite"
    index = ExperimentIndex(index_path)
    index.record_experiment("gone", tmp_path, None, None, "slurm")
    _vanished_slurm_job(index)
    monkeypatch.setattr(handle_module, "UNKNOWN_GRACE_S", 0.5)
    outcome = {}
    watcher = threading.Thread(daemon=True, target=lambda: outcome.setdefault("result", CliRunner().invoke(
        main, ["status", "gone", "--watch", "--interval", "0.2", "--index", str(index_path)])))
    watcher.start()
    watcher.join(timeout=60)
    assert not watcher.is_alive(), "status --watch still waits on a job SLURM has no record of"
    result = outcome["result"]
    assert result.exit_code == 0, result.output
    assert "987654321" in result.output and "UNKNOWN" in result.output
