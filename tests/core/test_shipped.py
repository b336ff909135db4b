"""Named files outside a checkout: the project's ./FOLDER/NAME.toml (here or above), else the shipped copy."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from steelseg_hpc.cli import main
from steelseg_hpc.compute.profiles import load_profile
from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.core.shipped import find_named
from steelseg_hpc.data.spec import load_spec
from steelseg_hpc.launch.config import load_experiment
from steelseg_hpc.sweeps.config import load_sweep


def test_every_kind_is_found_shipped_from_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_sweep("lora-rank").name == "lora-rank"
    assert load_profile("local").executor == "local"
    assert load_profile("local-cluster").executor == "slurm"
    assert load_profile("example-gpu-cluster").executor == "slurm"
    assert load_experiment("smoke").name == "smoke"
    found = find_named("sweep", "lora-rank")
    assert found.shipped
    assert found.describe().startswith("sweep lora-rank: shipped with steelseg-hpc")
    assert found.describe().endswith("(override: ./sweeps/lora-rank.toml)")


def test_a_project_file_of_the_same_name_overrides_the_shipped_one(tmp_path, monkeypatch):
    (tmp_path / "launch" / "experiments").mkdir(parents=True)
    (tmp_path / "launch" / "local.toml").write_text('executor = "local"\ntime_min = 7\n')
    (tmp_path / "launch" / "experiments" / "smoke.toml").write_text(
        'name = "my-smoke"\narchitectures = ["elunet"]\nstore = "s.zarr"\n')
    (tmp_path / "deeper").mkdir()
    monkeypatch.chdir(tmp_path / "deeper")  # a parent's folder counts
    assert load_profile("local").time_min == 7
    assert load_experiment("smoke").name == "my-smoke"
    found = find_named("profile", "local")
    assert not found.shipped and found.path == tmp_path / "launch" / "local.toml"
    assert found.describe() == f"profile local: {tmp_path / 'launch' / 'local.toml'}"
    assert find_named("profile", "local-cluster").shipped  # the other names stay shipped


def test_a_shipped_dataset_spec_reads_its_raw_folder_from_the_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loaded = load_spec("e-type")
    assert loaded.raw_dir == (tmp_path / "data_prep" / "raw" / "e-type").resolve()
    with pytest.raises(ConfigError, match="unknown dataset 'nosuch': .*known: .*metaldam"):
        load_spec("nosuch")


def test_launch_dry_run_of_a_shipped_experiment_says_where_it_was_found(tmp_path, monkeypatch, tiny_store):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["launch", "smoke", "--profile", "local", "--dry-run",
                                       "--set", f"store={tiny_store}"])
    assert result.exit_code == 0, result.output
    assert "experiment smoke: shipped with steelseg-hpc" in result.output
    assert "(override: ./launch/experiments/smoke.toml)" in result.output
    assert "profile local: shipped with steelseg-hpc" in result.output
    assert "nothing submitted" in result.output


def test_unknown_experiment_name_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["launch", "nosuch", "--profile", "local", "--dry-run"])
    assert result.exit_code == 2
    assert "unknown experiment 'nosuch'" in result.output and "smoke" in result.output
