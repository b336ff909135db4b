"""Bad submissions fail at submit time with one line, and nothing reaches the queue."""
from __future__ import annotations

import subprocess

import pytest
from click.testing import CliRunner

from steelseg_hpc.cli import main
from steelseg_hpc.core.errors import ConfigError, LaunchError
from steelseg_hpc.launch import submit_experiment
from steelseg_hpc.compute.profiles import ClusterProfile, check_profile
from steelseg_hpc.launch.executor import Executor

from .conftest import SMOKE, cluster_profile, tiny_experiment


def _queue_size() -> int:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout
    return len(out.split())


@pytest.mark.slurm
@pytest.mark.parametrize(
    "changes, message",
    [
        ({"partition": "nosuch"}, "partition 'nosuch' does not exist on this cluster; partitions: gpu"),
        ({"gpus_per_node": 3}, "asks for 3 GPUs per node but the nodes of partition 'gpu' have at most 2"),
        ({"nodes": 2}, "asks for 2 nodes"),
        ({"mem_gb": 100000}, "MB of memory"),
        ({"cpus_per_task": 64}, "CPUs"),
    ],
)
def test_profile_that_does_not_fit_the_cluster(slurm_cluster, changes, message):
    with pytest.raises(LaunchError, match=message):
        check_profile(cluster_profile(**changes))


def test_local_profile_needs_no_cluster():
    check_profile(ClusterProfile(executor="local"))


def test_missing_store_is_refused(tmp_path, index):
    exp = tiny_experiment("nostore", tmp_path / "missing.zarr", tmp_path)
    with pytest.raises(LaunchError, match="missing.zarr does not exist"):
        submit_experiment(exp, ClusterProfile(executor="local"), index)
    assert not index.path.exists()  # nothing was recorded


def test_unknown_architecture_is_refused(tiny_store, tmp_path, index):
    exp = tiny_experiment("badarch", tiny_store, tmp_path, archs=("unet3plus", "unet9"))
    with pytest.raises(ConfigError, match="unknown architecture.*'unet9'.*choose from:.*elunet"):
        submit_experiment(exp, ClusterProfile(executor="local"), index)


def test_bad_run_override_is_refused_before_submission(tiny_store, tmp_path, index):
    exp = tiny_experiment("badkey", tiny_store, tmp_path, extra=("epochz=3",))
    with pytest.raises(ConfigError, match="unet3plus-s0: .*epochz"):
        submit_experiment(exp, ClusterProfile(executor="local"), index)


@pytest.mark.slurm
def test_cli_refuses_bad_partition_with_one_line(slurm_cluster, tiny_store, tmp_path, index):
    before = _queue_size()
    result = CliRunner().invoke(main, [
        "launch", str(SMOKE), "--profile", "launch/local-cluster.toml",
        "--profile-set", "partition=debugq", "--set", f"store={tiny_store}",
        "--set", f"runs_root={tmp_path}"])
    assert result.exit_code == 2
    assert "partition 'debugq' does not exist" in result.output
    assert _queue_size() == before



@pytest.mark.slurm
def test_dry_run_checks_everything_lists_the_jobs_and_queues_nothing(slurm_cluster, tiny_store, tmp_path, index):
    before = _queue_size()
    args = ["launch", str(SMOKE), "--profile", "local-cluster", "--set", f"store={tiny_store}",
            "--set", f"runs_root={tmp_path}", "--dry-run"]
    result = CliRunner().invoke(main, args, env={"STEELSEG_INDEX": str(index.path)})
    assert result.exit_code == 0, result.output
    assert "SLURM partition gpu" in result.output and "1 GPU/node" in result.output
    assert "unet3plus" in result.output and "elunet" in result.output and "new" in result.output
    assert "nothing submitted" in result.output
    assert _queue_size() == before and not index.path.exists()
    bad = CliRunner().invoke(main, [*args, "--profile-set", "gpus_per_node=3"], env={"STEELSEG_INDEX": str(index.path)})
    assert bad.exit_code == 2 and "at most 2" in bad.output

@pytest.mark.slurm
def test_sbatch_refusal_becomes_launch_error(slurm_cluster, tmp_path):
    # Skip our own checks: sbatch itself must be turned into one line too.
    executor = Executor(cluster_profile(partition="nosuch"), tmp_path / "jobs")
    with pytest.raises(LaunchError, match="sbatch refused the job: .*nvalid partition"):
        executor.submit(print, "never runs")


def test_status_of_unknown_experiment(index):
    index.record_experiment("known", index.path.parent, None, None, "local")
    result = CliRunner().invoke(main, ["status", "unknown"])
    assert result.exit_code == 2 and "unknown experiment 'unknown'" in result.output
    assert "known" in result.output
