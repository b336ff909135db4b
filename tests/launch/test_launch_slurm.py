"""End to end on the real local SLURM: arrays, mid-epoch requeue after USR2, cancel, failures, 2 tasks.

Every job here is a real ``sbatch`` of the real training engine on the ``tiny_store``; nothing is
mocked. The module shares one completed smoke array (two architectures) between tests.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from steelseg_hpc.cli import main
from steelseg_hpc.core.errors import LaunchError
from steelseg_hpc.launch import cancel, job_logs, submit_experiment
from steelseg_hpc.launch.index import JobRow
from steelseg_hpc.launch.status import collect_status, job_states
from steelseg_hpc.core.rundir import read_metrics

from .conftest import (
    SMOKE,
    cluster_profile,
    sacct_states,
    tiny_experiment,
    wait_for_jobs,
    wait_for_marker,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def smoke_array(slurm_cluster, tiny_store, tmp_path_factory):
    """The shipped smoke experiment launched through the CLI as one array, run to the end."""
    folder = tmp_path_factory.mktemp("smoke")
    index_path = folder / "index.sqlite"
    runner = CliRunner()
    env = {"STEELSEG_INDEX": str(index_path)}
    result = runner.invoke(main, ["launch", str(SMOKE), "--profile", "launch/local-cluster.toml",
                                  "--set", f"store={tiny_store}", "--set", f"runs_root={folder}"],
                           env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    from steelseg_hpc.launch.index import ExperimentIndex

    index = ExperimentIndex(index_path)
    wait_for_jobs("smoke", index, timeout=300)
    # sacct rows appear about a second after the job ends: status --json must then say COMPLETED.
    status = runner.invoke(main, ["status", "smoke", "--json"], env=env, catch_exceptions=False)
    assert status.exit_code == 0, status.output
    return {"index": index, "env": env, "rows": json.loads(status.output)["jobs"], "runner": runner}


def test_array_of_two_trainings_completes_with_metrics(smoke_array):
    rows = smoke_array["rows"]
    assert [row["arch"] for row in rows] == ["unet3plus", "elunet"]
    array_ids = {row["job_id"].split("_")[0] for row in rows}
    assert len(array_ids) == 1 and all("_" in row["job_id"] for row in rows)  # one SLURM array
    for row in rows:
        assert row["state"] == "COMPLETED", row
        assert row["epoch"] == 2 and row["epochs_total"] == 2
        assert 0.0 <= row["best_val_dice"] <= 1.0 and row["pixel_accuracy"] is not None
        assert row["node"] and row["peak_memory_mb"] > 0
        final = json.loads((Path(row["run_dir"]) / "final.json").read_text())
        assert final["epochs_completed"] == 2 and final["stopped"] == "completed"


def test_status_table_and_logs(smoke_array):
    runner, env = smoke_array["runner"], smoke_array["env"]
    table = runner.invoke(main, ["status"], env=env, catch_exceptions=False)
    assert table.exit_code == 0 and "COMPLETED" in table.output and "unet3plus" in table.output
    job_id = smoke_array["rows"][0]["job_id"]
    logs = runner.invoke(main, ["logs", job_id], env=env, catch_exceptions=False)
    assert logs.exit_code == 0 and "unet3plus seed 0" in logs.output



def test_without_accounting_ended_jobs_are_judged_by_their_results_and_run_dirs(
        smoke_array, tmp_path, monkeypatch, caplog):
    """Clusters with accounting off answer every ``sacct`` with an error; squeue still works."""
    shim = tmp_path / "bin" / "sacct"
    shim.parent.mkdir()
    shim.write_text("#!/bin/sh\necho 'sacct: error: Slurm accounting storage is disabled' >&2\nexit 1\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim.parent}:{os.environ['PATH']}")
    index = smoke_array["index"]
    statuses = collect_status("smoke", index)
    assert [s.state for s in statuses] == ["COMPLETED", "COMPLETED"]  # from submitit's result files
    assert "accounting storage is disabled" in caplog.text

    finished = tmp_path / "finished"
    finished.mkdir()
    (finished / "final.json").write_text((Path(statuses[0].run_dir) / "final.json").read_text())
    lost = tmp_path / "lost"
    lost.mkdir()
    rows = [JobRow(job_id, "gone", "unet3plus", 0, str(run_dir), "slurm", str(run_dir / "x.out"),
                   str(run_dir / "x.err"), 2, time.time())
            for job_id, run_dir in (("999998", finished), ("999999", lost))]
    by_run = {Path(s.run_dir).name: s for s in job_states(rows, index)}
    assert by_run["finished"].state == "COMPLETED" and "final.json" in by_run["finished"].reason
    assert by_run["lost"].state == "UNKNOWN" and "no record" in by_run["lost"].reason


def test_usr2_mid_epoch_requeues_and_resumes_that_epoch_to_the_same_result(
        smoke_array, tiny_store, tmp_path, index, pause_jobs_at_forward):
    # Epoch 2 has 6 optimiser steps of 2 micro-batches: the signal lands at the end of its 2nd step
    # (forward 16), past its first step and well before its end, so the stop has to save a
    # mid-epoch checkpoint.
    paused = pause_jobs_at_forward(16)
    exp = tiny_experiment("requeue", tiny_store, tmp_path)
    (row,) = submit_experiment(exp, cluster_profile(), index)
    run_dir = tmp_path / "requeue" / "unet3plus-s0"
    wait_for_marker(paused, row, index)
    cancel("requeue", index, signal_name="USR2")  # what SLURM sends on preemption / time limit
    (status,) = wait_for_jobs("requeue", index, timeout=240)
    assert status.state == "COMPLETED", (status.reason, status.stderr_tail)
    assert "REQUEUED" in sacct_states(row.job_id)
    stderr = job_logs(row.job_id, index)["stderr"]
    assert "requeueing" in stderr and "stopped on SIGUSR2 in epoch 2" in stderr
    # The requeued job went on from the step where the first one stopped, not from epoch 1's end.
    resumed_at = re.search(r"resumed from checkpoint epoch0002-mb(\d+) \(epoch 2, after micro-batch (\d+)",
                           (run_dir / "train.log").read_text())
    assert resumed_at, (run_dir / "train.log").read_text()
    assert (int(resumed_at.group(1)), int(resumed_at.group(2))) == (4, 4)
    epochs = [record.epoch for record in read_metrics(status.run_dir)]
    assert epochs == [1, 2]
    uninterrupted = next(r for r in smoke_array["rows"] if r["arch"] == "unet3plus")
    reference = read_metrics(uninterrupted["run_dir"])
    resumed = read_metrics(status.run_dir)
    for key in ("train_loss", "train_dice", "val_dice", "val_pixel_accuracy"):
        assert getattr(resumed[-1], key) == pytest.approx(getattr(reference[-1], key), rel=1e-3, abs=1e-4), key


def test_cancel_stops_a_running_experiment(slurm_cluster, tiny_store, tmp_path, index):
    exp = tiny_experiment("cancelme", tiny_store, tmp_path, extra=("epochs=500",))
    submit_experiment(exp, cluster_profile(), index)
    wait_for_jobs("cancelme", index, timeout=120, until=lambda rows: rows[0].state == "RUNNING")
    with pytest.raises(LaunchError, match="still in job"):  # two jobs must not share a run dir
        submit_experiment(exp, cluster_profile(), index)
    result = CliRunner().invoke(main, ["cancel", "cancelme"], catch_exceptions=False)
    assert result.exit_code == 0 and "cancelled 1 job" in result.output
    (status,) = wait_for_jobs("cancelme", index, timeout=60)
    assert status.state == "CANCELLED"


def test_failing_job_shows_its_error(slurm_cluster, tiny_store, tmp_path, index):
    # A split that does not exist passes every submit-time check and fails inside the job.
    exp = tiny_experiment("broken", tiny_store, tmp_path, extra=("data.train_split=nosuchsplit",))
    submit_experiment(exp, cluster_profile(), index)
    (status,) = wait_for_jobs("broken", index, timeout=180)
    assert status.state == "FAILED"
    assert "nosuchsplit" in status.reason, (status.reason, status.stderr_tail)
    table = CliRunner().invoke(main, ["status", "broken"], catch_exceptions=False)
    assert "FAILED" in table.output and "nosuchsplit" in table.output


def test_two_task_job_trains_with_world_size_two(slurm_cluster, tiny_store, tmp_path, index):
    exp = tiny_experiment("ddp", tiny_store, tmp_path, extra=("epochs=1",))
    (row,) = submit_experiment(exp, cluster_profile(gpus_per_node=2), index)
    (status,) = wait_for_jobs("ddp", index, timeout=240)
    assert status.state == "COMPLETED", (status.reason, status.stderr_tail)
    (record,) = read_metrics(status.run_dir)
    assert record.world_size == 2
    stdout = job_logs(row.job_id, index)["stdout"]
    assert "rank 0/2" in stdout
