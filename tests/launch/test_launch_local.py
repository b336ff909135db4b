"""The same launch, status, logs and cancel on the local executor (processes here, no SLURM)."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest
from click.testing import CliRunner

from steelseg_hpc.cli import main
from steelseg_hpc.compute.profiles import load_profile
from steelseg_hpc.core.rundir import read_metrics
from steelseg_hpc.launch import JobRow, cancel, collect_status, job_logs, submit_experiment
from steelseg_hpc.launch.local_jobs import is_alive, task_processes

from .conftest import REPO, tiny_experiment, wait_for_jobs, wait_for_marker

LOCAL = REPO / "launch" / "local.toml"


@pytest.mark.slow
def test_local_executor_trains_and_reports(tiny_store, tmp_path, index):
    exp = tiny_experiment("local", tiny_store, tmp_path, extra=("epochs=1",))
    (row,) = submit_experiment(exp, load_profile(LOCAL), index)
    assert row.executor == "local" and row.job_id.isdigit()  # a local job id is its pid
    (status,) = wait_for_jobs("local", index, timeout=240)
    assert status.state == "COMPLETED", (status.reason, status.stderr_tail)
    assert status.epoch == 1 and status.best_val_dice is not None and status.node == "local"
    assert "unet3plus seed 0" in job_logs(row.job_id, index)["stdout"]


def _wait_for_training(row, run_dir, timeout=180):
    deadline = time.monotonic() + timeout
    while not (task_processes(row.job_id) and read_metrics(run_dir)):
        assert time.monotonic() < deadline, job_logs(row.job_id, lines=30)["stderr"]
        time.sleep(0.1)


def _processes_started_with(token: str) -> list[psutil.Process]:
    """Live processes whose start environment holds ``token``: every process of a job inherits it."""
    found = []
    for process in psutil.process_iter():
        try:
            if (process.status() != psutil.STATUS_ZOMBIE
                    and process.environ().get("STEELSEG_TEST_JOB_TOKEN") == token):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


@pytest.mark.slow
def test_cancel_stops_the_training_of_a_local_job(tiny_store, tmp_path, index, monkeypatch):
    monkeypatch.setenv("STEELSEG_TEST_JOB_TOKEN", str(tmp_path))
    exp = tiny_experiment("stopme", tiny_store, tmp_path, extra=("epochs=500",))
    (row,) = submit_experiment(exp, load_profile(LOCAL), index)
    run_dir = tmp_path / "stopme" / "unet3plus-s0"
    _wait_for_training(row, run_dir)
    # the row submit returns is the one recorded: its submission time identifies the job's processes
    assert row.submitted_at > 0 and is_alive(row.job_id, row.submitted_at)
    assert task_processes(row.job_id, row.submitted_at)
    tasks = task_processes(row.job_id)
    result = CliRunner().invoke(main, ["cancel", "stopme"], catch_exceptions=False)
    assert result.exit_code == 0 and "cancelled 1 job(s)" in result.output
    (status,) = wait_for_jobs("stopme", index, timeout=60)
    assert status.state == "CANCELLED", (status.state, status.reason)
    assert not is_alive(row.job_id) and not any(task.is_running() for task in tasks)
    # nothing trains on in the background: no process of the job is left, child or grandchild
    assert not _processes_started_with(str(tmp_path))
    assert "stopped on SIGTERM" in job_logs(row.job_id, index)["stderr"]
    again = CliRunner().invoke(main, ["cancel", "stopme"], catch_exceptions=False)
    assert "nothing to do: 1 job(s) had already ended (CANCELLED 1)" in again.output


@pytest.mark.slow
def test_usr2_checkpoints_and_requeues_a_local_job(tiny_store, tmp_path, index, pause_jobs_at_forward):
    # 12 micro-batches (6 steps of 2) per epoch: forward 16 ends the 2nd step of epoch 2
    paused = pause_jobs_at_forward(16)
    exp = tiny_experiment("preemptme", tiny_store, tmp_path, extra=("epochs=3",))
    (row,) = submit_experiment(exp, load_profile(LOCAL), index)
    run_dir = tmp_path / "preemptme" / "unet3plus-s0"
    wait_for_marker(paused, row, index)
    cancel("preemptme", index, signal_name="USR2")
    (status,) = wait_for_jobs("preemptme", index, timeout=300)
    assert status.state == "COMPLETED", (status.reason, status.stderr_tail)
    log = (run_dir / "train.log").read_text()
    assert "resumed from checkpoint epoch0002-mb000004 (epoch 2, after micro-batch 4 of it)" in log, log
    assert [r.epoch for r in read_metrics(run_dir)] == [1, 2, 3]


def test_signal_names_and_unknown_targets_are_one_line_errors(index):
    index.record_experiment("known", index.path.parent, None, None, "local")
    runner = CliRunner()
    bad_signal = runner.invoke(main, ["cancel", "known", "--signal", "BOGUS"])
    assert bad_signal.exit_code == 2 and "--signal BOGUS: unknown or not allowed; choose one of USR2" in bad_signal.output
    index.record_job(JobRow(job_id="4711", experiment="known", arch="elunet", seed=1, run_dir="r",
                            executor="local", stdout="o", stderr="e"))
    logs = runner.invoke(main, ["logs", "known"])
    assert logs.exit_code == 2 and "'known' is an experiment; logs shows one job: 4711 (elunet seed 1)" in logs.output
    unknown = runner.invoke(main, ["cancel", "nosuch"])
    assert unknown.exit_code == 2
    assert "'nosuch' is neither an experiment nor a job id" in unknown.output and "known" in unknown.output


def test_a_damaged_index_is_one_line(index):
    index.path.write_bytes(b"this is not sqlite" * 100)
    for args in (["status"], ["cancel", "x"], ["logs", "1"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert "cannot be read" in result.output and "Traceback" not in result.output


# A process that notes every stop signal it gets and, on SIGUSR1, writes them down and exits. Any
# signal sent before that SIGUSR1 has reached it by the time its handler runs, so the note proves
# that none came, without waiting for one.
STRANGER = """
import signal, sys, time
from pathlib import Path

received = []
for sig in (signal.SIGTERM, signal.SIGUSR2, signal.SIGINT, signal.SIGUSR1):
    signal.signal(sig, lambda signum, frame: received.append(signal.Signals(signum).name))
Path(sys.argv[1]).write_text("ready")
deadline = time.time() + 120
while "SIGUSR1" not in received and time.time() < deadline:
    time.sleep(0.01)
Path(sys.argv[2]).write_text(" ".join(received))
"""


def test_an_ended_local_job_whose_pid_was_reused_is_never_signalled(index, tmp_path):
    """A local job id is a pid; once the job is gone the kernel gives the number to others."""
    ready, received = tmp_path / "ready", tmp_path / "received"
    stranger = subprocess.Popen([sys.executable, "-c", STRANGER, str(ready), str(received)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():  # its handlers are in place
            assert stranger.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        index.record_experiment("old", tmp_path, None, None, "local")
        # the job was submitted an hour ago and ended without a result; its pid is now `stranger`'s
        index.record_job(JobRow(job_id=str(stranger.pid), experiment="old", arch="unet3plus", seed=0,
                                run_dir=str(tmp_path / "run"), executor="local",
                                stdout=str(tmp_path / "out"), stderr=str(tmp_path / "err"),
                                submitted_at=time.time() - 3600))
        (before,) = collect_status("old", index)
        assert before.state == "FAILED" and before.reason == "process gone without a result"
        for args in (["cancel", "old"], ["cancel", "old", "--signal", "TERM"]):
            result = CliRunner().invoke(main, args, catch_exceptions=False)
            assert result.exit_code == 0 and "nothing to do: 1 job(s) had already ended (FAILED 1)" in result.output
        stranger.send_signal(signal.SIGUSR1)
        assert stranger.wait(timeout=60) == 0
        assert received.read_text() == "SIGUSR1"  # nobody else signalled it
        (after,) = collect_status("old", index)
        assert after.state == "FAILED"  # an ended job's record is not rewritten as CANCELLED
    finally:
        stranger.kill()
        stranger.wait()
