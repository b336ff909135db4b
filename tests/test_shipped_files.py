"""Every TOML file users are given to edit loads with its validator: a shipped typo fails here."""
from __future__ import annotations

from pathlib import Path

import pytest

from steelseg_hpc.compute.profiles import load_profile
from steelseg_hpc.data.spec import load_spec
from steelseg_hpc.launch.config import load_experiment
from steelseg_hpc.sweeps.config import load_sweep
from steelseg_hpc.sweeps.space import SearchSpace

REPO = Path(__file__).resolve().parents[1]


def _files(folder: str) -> list[Path]:
    found = sorted((REPO / folder).glob("*.toml"))
    assert found, f"no TOML files in {folder}/"
    return found


@pytest.mark.parametrize("path", _files("launch"), ids=lambda p: p.name)
def test_cluster_profiles_load(path):
    load_profile(path)


@pytest.mark.parametrize("path", _files("launch/experiments"), ids=lambda p: p.name)
def test_experiments_load(path):
    experiment = load_experiment(path)
    assert experiment.name and experiment.architectures


@pytest.mark.parametrize("path", _files("sweeps"), ids=lambda p: p.name)
def test_sweeps_load_and_their_spaces_build_run_configs(path):
    spec = load_sweep(path)
    SearchSpace(spec).base_config()


@pytest.mark.parametrize("path", _files("data_prep"), ids=lambda p: p.name)
def test_dataset_specs_load(path):
    loaded = load_spec(path)
    assert loaded.spec.groups and loaded.spec.classes
