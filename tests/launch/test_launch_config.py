"""Experiments and the jobs a profile submits: what they accept, what they refuse, what they submit."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.compute.profiles import ClusterProfile, load_profile
from steelseg_hpc.launch.config import DEFAULT_ARCHITECTURES, Experiment, load_experiment
from steelseg_hpc.launch.executor import submitit_parameters

REPO = Path(__file__).resolve().parents[2]


def test_shipped_smoke_experiment_is_small():
    exp = load_experiment(REPO / "launch" / "experiments" / "smoke.toml")
    assert len(exp.architectures) == 2 and "epochs=2" in exp.overrides


def test_experiment_defaults_to_the_seven_architectures():
    exp = Experiment(name="all", store="s.zarr")
    assert tuple(exp.architectures) == DEFAULT_ARCHITECTURES and "sam-lora" in exp.architectures
    assert len(exp.runs()) == 7


def test_runs_are_arch_times_seed_with_per_arch_overrides(tmp_path):
    exp = Experiment(name="e", architectures=["a", "b"], seeds=[0, 1], store="s.zarr",
                     overrides=["epochs=2"], arch_overrides={"b": ["rank=4"]}, runs_root=tmp_path)
    runs = exp.runs()
    assert [r.name for r in runs] == ["a-s0", "a-s1", "b-s0", "b-s1"]
    assert runs[0].run_dir == tmp_path / "e" / "a-s0"
    assert runs[2].overrides == ("epochs=2", "rank=4")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"archs": ["x"]}, "unknown key"),
        ({"seeds": [1, 1]}, "duplicates"),
        ({"name": "has space"}, "name"),
        ({"architectures": []}, "architectures"),
        ({"arch_overrides": {"nope": ["a=1"]}}, "not in architectures"),
    ],
)
def test_bad_experiments_are_one_line_config_errors(tmp_path, fields, message):
    data = {"name": "e", "store": "s.zarr", **fields}
    path = tmp_path / "exp.toml"
    path.write_text("\n".join(f"{k} = {_toml(v)}" for k, v in data.items()))
    with pytest.raises(ConfigError, match=message) as err:
        load_experiment(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_submitit_parameters_carry_every_profile_field():
    profile = ClusterProfile(partition="gpu", account="lab", qos="high", constraint="h100",
                             gpus_per_node=2, cpus_per_task=4, mem_gb=8, time_min=90,
                             setup=["module load cuda"], array_parallelism=3, signal_delay_s=120,
                             slurm_extra={"exclude": "node7"})
    params = submitit_parameters(profile, "exp")
    assert params["tasks_per_node"] == 2 and params["gpus_per_node"] == 2
    assert params["slurm_partition"] == "gpu" and params["slurm_account"] == "lab"
    assert params["slurm_qos"] == "high" and params["slurm_constraint"] == "h100"
    assert params["slurm_setup"] == ["module load cuda"] and params["slurm_array_parallelism"] == 3
    assert params["slurm_additional_parameters"] == {"exclude": "node7"}
    assert params["timeout_min"] == 90 and params["mem_gb"] == 8 and params["name"] == "exp"


def test_local_profile_has_no_slurm_parameters():
    params = submitit_parameters(ClusterProfile(executor="local", setup=["true"]), "exp")
    assert not any(key.startswith("slurm_") for key in params) and params["local_setup"] == ["true"]


def _toml(value) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


@pytest.mark.skipif(shutil.which("srun") is None, reason="submitit's SLURM executor needs srun")
def test_sbatch_script_from_the_local_cluster_profile(tmp_path):
    from steelseg_hpc.launch.executor import Executor

    profile = load_profile(REPO / "launch" / "local-cluster.toml", ["gpus_per_node=2", "max_requeues=1"])
    executor = Executor(profile, tmp_path, job_name="smoke")
    slurm = executor._executor._executor  # submitit's SlurmExecutor behind the AutoExecutor
    assert slurm.max_num_timeout == 1
    script = slurm._make_submission_file_text("python -m job", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=2", "#SBATCH --ntasks-per-node=2",
                 "#SBATCH --cpus-per-task=1", "#SBATCH --mem=3GB", "#SBATCH --time=30",
                 "#SBATCH --signal=USR2@60", "#SBATCH --job-name=smoke", "export OMP_NUM_THREADS=1"):
        assert line in script.splitlines(), line
    assert "srun" in script  # the payload runs as a job step, so scancel --signal reaches it
