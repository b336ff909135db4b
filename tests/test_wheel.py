"""The built wheel, installed in a fresh venv, runs the shipped names from an empty folder (no checkout)."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(command: list, cwd: Path, env: dict, timeout: int = 600) -> str:
    done = subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _fresh_clone(target: Path) -> Path:
    # what git would check out (tracked files, and new ones not ignored): no build/, no egg-info
    listed = subprocess.run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(source.read_bytes())
    return target


@pytest.mark.slow
def test_the_installed_wheel_runs_shipped_sweeps_experiments_and_the_demo_outside_a_checkout(tmp_path):
    source = _fresh_clone(tmp_path / "clone")
    # no network: the building python's setuptools, no isolated build environment
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", tmp_path / "dist", "."], source, dict(os.environ))
    wheel = next((tmp_path / "dist").glob("steelseg_hpc-*.whl"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, dict(os.environ))
    site_packages = Path(subprocess.run([venv / "bin" / "python", "-c",
                                         "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        capture_output=True, text=True, check=True).stdout.strip())
    # the dependencies come from this venv, after the new venv's own packages (its .pth files, such
    # as an editable install of the checkout, are not run from a path line)
    (site_packages / "steelseg-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
          wheel], tmp_path, dict(os.environ))
    empty = tmp_path / "project"
    empty.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    cli = venv / "bin" / "steelseg-hpc"

    where = _run([venv / "bin" / "python", "-c", "import steelseg_hpc; print(steelseg_hpc.__file__)"], empty, env)
    assert Path(where.strip()).is_relative_to(site_packages), where
    # a tiny quick demo: its store is the one the shipped sweep and experiment point at
    demo = _run([cli, "demo", "--quick", "--epochs", "1", "--size", "96x96", "--tile-size", "48", "--workers", "0"],
                empty, env)
    assert (empty / "demo" / "store.zarr").is_dir(), demo
    sweep = _run([cli, "sweep", "lora-rank", "--dry-run"], empty, env)
    assert "sweep lora-rank: shipped with steelseg-hpc" in sweep and "(override: ./sweeps/lora-rank.toml)" in sweep
    assert "profile local: shipped with steelseg-hpc" in sweep and "nothing was submitted" in sweep
    launch = _run([cli, "launch", "smoke", "--profile", "local", "--dry-run"], empty, env)
    assert "experiment smoke: shipped with steelseg-hpc" in launch and "nothing submitted" in launch
    assert not (empty / "runs").exists()  # dry runs write nothing
