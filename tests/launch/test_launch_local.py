"""The same launch, status and logs on the local executor (processes on this machine, no SLURM)."""
from __future__ import annotations

import pytest

from steelseg_hpc.launch import job_logs, submit_experiment
from steelseg_hpc.compute.profiles import load_profile

from .conftest import REPO, tiny_experiment, wait_for_jobs


@pytest.mark.slow
def test_local_executor_trains_and_reports(tiny_store, tmp_path, index):
    exp = tiny_experiment("local", tiny_store, tmp_path, extra=("epochs=1",))
    (row,) = submit_experiment(exp, load_profile(REPO / "launch" / "local.toml"), index)
    assert row.executor == "local" and row.job_id.isdigit()  # a local job id is its pid
    (status,) = wait_for_jobs("local", index, timeout=240)
    assert status.state == "COMPLETED", (status.reason, status.stderr_tail)
    assert status.epoch == 1 and status.best_val_dice is not None and status.node == "local"
    assert "unet3plus seed 0" in job_logs(row.job_id, index)["stdout"]
