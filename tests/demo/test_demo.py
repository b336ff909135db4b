"""``steelseg-hpc demo``: the whole journey end to end at its smallest settings, resumable; ``--quick``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


SMALLEST = ["--size", "128x112", "--tile-size", "64", "--width", "2", "--epochs", "1", "--max-train-tiles", "16",
            "--sweep-ranks", "0,4", "--workers", "0"]


def demo(args: list[str], folder: Path, index: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, STEELSEG_INDEX=str(index), NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "steelseg_hpc", "demo", "--dir", str(folder), *args],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


@pytest.mark.slow
def test_the_whole_journey_runs_and_resumes(tmp_path):
    index = tmp_path / "index.sqlite"
    first = demo(SMALLEST, tmp_path / "demo", index)
    out = first.stdout
    for step in ("1/7 dataset", "2/7 prep", "3/7 train the model zoo", "4/7 evaluate", "5/7 LoRA-rank sweep",
                 "6/7 status", "7/7 report"):
        assert step in out, step
    report = tmp_path / "demo" / "report" / "report.html"
    assert f"the report is {report}" in out and report.is_file()
    summary = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    assert len(summary["rows"]) == 7 and [s["name"] for s in summary["sweeps"]] == ["demo-lora-rank"]
    assert all(row["dice"] != "–" for row in summary["rows"])  # every run was evaluated
    status = subprocess.run([sys.executable, "-m", "steelseg_hpc", "status", "demo-zoo", "--json"],
                            env=dict(os.environ, STEELSEG_INDEX=str(index)), capture_output=True, text=True)
    jobs = json.loads(status.stdout)["jobs"]
    assert len(jobs) == 7 and all(job["state"] == "COMPLETED" for job in jobs)
    started = time.monotonic()
    again = demo(SMALLEST, tmp_path / "demo", index)
    assert "synthetic data already in" in again.stdout and "up to date" in again.stdout
    assert "all 7 runs of demo-zoo finished earlier" in again.stdout
    assert "job " not in again.stdout.split("5/7")[1].split("6/7")[0]  # the sweep submits nothing again
    assert time.monotonic() - started < 120


@pytest.mark.slow
def test_quick_demo_trains_one_model(tmp_path):
    done = demo(["--quick", "--size", "128x112", "--tile-size", "64", "--epochs", "1", "--workers", "0"],
                tmp_path / "quick", tmp_path / "index.sqlite")
    assert "4/4 evaluate whole test images" in done.stdout and "overall" in done.stdout
    assert (tmp_path / "quick" / "runs" / "unet3plus" / "final.json").is_file()


def test_each_dataset_has_its_own_folder_so_stores_never_meet(tmp_path):
    from steelseg_hpc.demo import JourneyOptions
    from steelseg_hpc.launch import ExperimentIndex

    index = ExperimentIndex(tmp_path / "index.sqlite")
    assert JourneyOptions(index=index).folder == Path("demo")
    assert JourneyOptions(dataset="metaldam", index=index).folder == Path("demo-metaldam")
    assert JourneyOptions(spec=tmp_path / "e-type.toml", index=index).name == "demo-e-type"
    assert JourneyOptions(dataset="metaldam", folder=tmp_path, index=index).folder == tmp_path


def test_a_raw_folder_of_the_users_is_refused_with_a_remedy_demo_has(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "notes.txt").write_text("mine")
    env = dict(os.environ, STEELSEG_INDEX=str(tmp_path / "index.jsonl"), NO_ALBUMENTATIONS_UPDATE="1")
    done = subprocess.run([sys.executable, "-m", "steelseg_hpc", "demo", "--dir", str(tmp_path), "--quick",
                           "--size", "128x112", "--tile-size", "64", "--workers", "0"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-4000:]
    error = done.stderr.strip().splitlines()[-1]
    assert f"{raw} is not empty and was not made by synth" in error
    assert "--force" not in error and "choose another --dir" in error and f"--spec SPEC --raw {raw}" in error
    assert (raw / "notes.txt").read_text() == "mine" and sorted(raw.iterdir()) == [raw / "notes.txt"]
