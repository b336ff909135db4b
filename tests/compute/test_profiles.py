"""Cluster profiles: what they accept, what they refuse, where they are found, what Dask gets."""
from __future__ import annotations

from pathlib import Path

import pytest

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.compute.dask_cluster import slurm_cluster_options
from steelseg_hpc.compute.profiles import ClusterProfile, load_profile

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["local.toml", "local-cluster.toml"])
def test_shipped_profiles_load(name):
    profile = load_profile(REPO / "launch" / name)
    assert profile.executor in ("local", "slurm")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"executor": "kubernetes"}, "executor"),
        ({"gpus_per_node": -1}, "gpus_per_node"),
        ({"gpus_per_node": 2, "tasks_per_node": 3}, "one task per GPU"),
        ({"executor": "local", "nodes": 2}, "local executor"),
        ({"partion": "gpu"}, "unknown key"),
    ],
)
def test_bad_profiles_are_one_line_config_errors(tmp_path, fields, message):
    path = tmp_path / "profile.toml"
    path.write_text("\n".join(f"{k} = {_toml(v)}" for k, v in fields.items()))
    with pytest.raises(ConfigError, match=message):
        load_profile(path)


def test_profile_overrides_apply():
    profile = load_profile(REPO / "launch" / "local-cluster.toml", ["time_min=7", "gpus_per_node=2"])
    assert profile.time_min == 7 and profile.world_size() == 2


def test_one_task_per_gpu_by_default():
    assert ClusterProfile(gpus_per_node=4, nodes=2).world_size() == 8
    assert ClusterProfile().tasks() == 1


def test_dask_options_from_profile():
    opts = slurm_cluster_options(ClusterProfile(partition="gpu", qos="q", mem_gb=2, time_min=61,
                                                dask_interface="lo"), "/tmp/logs")
    assert opts["queue"] == "gpu" and opts["walltime"] == "01:01:00" and opts["memory"] == "2.0GB"
    assert opts["interface"] == "lo" and opts["scheduler_options"]["interface"] == "lo"
    assert "--qos=q" in opts["job_extra_directives"]


def _toml(value) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_a_profile_is_found_by_name_from_the_project_or_below(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    assert load_profile("local-cluster").partition == "gpu"
    assert load_profile("local").executor == "local"
    monkeypatch.chdir(REPO / "launch" / "experiments")  # a parent's launch/ folder is found too
    assert load_profile("local-cluster").executor == "slurm"
    with pytest.raises(ConfigError, match="--profile nosuch: no such file or profile name; known profiles: .*local-cluster"):
        load_profile("nosuch")
    monkeypatch.chdir(tmp_path)  # outside a project: the shipped profiles
    assert load_profile("local").executor == "local"
    with pytest.raises(ConfigError, match="--profile nosuch: no such file or profile name; known profiles: .*local"):
        load_profile("nosuch")
    (tmp_path / "mine.toml").write_text('executor = "local"\n')
    assert load_profile(tmp_path / "mine.toml").executor == "local"  # a path still works anywhere
