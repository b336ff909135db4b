"""Fixtures for the launcher tests: the real local SLURM, a private index, tiny experiments.

Tests marked ``slurm`` submit real jobs to the cluster that ``launch/local-cluster/up`` brings up
(the project's test command runs it first). They skip only when SLURM is not installed at all;
an installed cluster that does not answer is a failure, not a skip.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from steelseg_hpc.compute.profiles import ClusterProfile, load_profile
from steelseg_hpc.launch.config import Experiment, load_experiment
from steelseg_hpc.launch.index import ExperimentIndex

REPO = Path(__file__).resolve().parents[2]
LOCAL_CLUSTER_PROFILE = REPO / "launch" / "local-cluster.toml"

#: The shipped smoke experiment: its run-config overrides (2 epochs, tiny widths, fp32, no
#: loader workers) keep one training job to seconds on a shared 2-core machine.
SMOKE = REPO / "launch" / "experiments" / "smoke.toml"
TINY_RUN = list(load_experiment(SMOKE).overrides)


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The local SLURM's partition name; skips when SLURM is not installed on this machine."""
    if shutil.which("sinfo") is None:
        pytest.skip("SLURM is not installed (no sinfo on PATH); run launch/local-cluster/up")
    done = subprocess.run(["sinfo", "-h", "-o", "%R %t"], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.fail(f"sinfo is installed but SLURM does not answer ({done.stderr.strip()}); "
                    "run launch/local-cluster/up")
    profile = load_profile(LOCAL_CLUSTER_PROFILE)
    if profile.partition not in done.stdout.split():
        pytest.fail(f"partition {profile.partition!r} missing from sinfo: {done.stdout.strip()}")
    return profile.partition


# A sitecustomize for the jobs a test submits, which inherit this process's environment (PYTHONPATH
# included): the Nth training forward of a job writes a marker file and waits (up to 60 s) until the
# job has received its stop signal, so the test can aim a signal at a known micro-batch instead of at
# a time that depends on the machine's load. Only the first attempt pauses: a requeued job finds the
# marker already there.
PAUSE_HOOK = """
import os
if os.environ.get("STEELSEG_TEST_PAUSE_MARKER"):
    import signal, time
    from pathlib import Path
    from steelseg_hpc.training import engine

    marker = Path(os.environ["STEELSEG_TEST_PAUSE_MARKER"])
    forward = int(os.environ["STEELSEG_TEST_PAUSE_FORWARD"])
    calls = {"n": 0}
    original = engine.TrainStep.fp32_loss

    def pausing(self, logits, masks):
        calls["n"] += self.training
        if self.training and calls["n"] == forward and not marker.exists():
            marker.write_text("waiting for a stop signal")
            stop = signal.getsignal(signal.SIGTERM).__self__  # the job's StopRequest
            deadline = time.time() + 60
            while not stop.requested and time.time() < deadline:
                time.sleep(0.01)
        return original(self, logits, masks)

    engine.TrainStep.fp32_loss = pausing
"""


@pytest.fixture()
def pause_jobs_at_forward(tmp_path, monkeypatch):
    """``pause(n)``: jobs submitted from now on pause at their nth training forward; returns the marker."""
    hook = tmp_path / "pause-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PAUSE_HOOK)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))

    def pause(forward: int) -> Path:
        marker = tmp_path / f"paused-at-forward-{forward}"
        monkeypatch.setenv("STEELSEG_TEST_PAUSE_MARKER", str(marker))
        monkeypatch.setenv("STEELSEG_TEST_PAUSE_FORWARD", str(forward))
        return marker

    return pause


def wait_for_marker(marker: Path, row, index: ExperimentIndex, timeout: float = 240) -> None:
    """Poll until the job ``row`` writes ``marker`` (it fails the test if the job ends first)."""
    from steelseg_hpc.compute.slurm import TERMINAL_STATES
    from steelseg_hpc.launch import job_logs
    from steelseg_hpc.launch.status import collect_status

    deadline = time.monotonic() + timeout
    while not marker.exists():
        (status,) = [s for s in collect_status(row.experiment, index) if s.job_id == row.job_id]
        assert status.state not in TERMINAL_STATES, (status.state, status.reason, status.stderr_tail)
        assert time.monotonic() < deadline, job_logs(row.job_id, index, lines=30)["stderr"]
        time.sleep(0.5)


@pytest.fixture()
def index(tmp_path, monkeypatch) -> ExperimentIndex:
    """A private experiment index (also what the CLI uses, through STEELSEG_INDEX)."""
    path = tmp_path / "index.sqlite"
    monkeypatch.setenv("STEELSEG_INDEX", str(path))
    return ExperimentIndex(path)


def cluster_profile(**changes) -> ClusterProfile:
    """``launch/local-cluster.toml`` with some fields changed."""
    return load_profile(LOCAL_CLUSTER_PROFILE).model_copy(update=changes)


def tiny_experiment(name: str, store: Path, runs_root: Path, archs=("unet3plus",),
                    extra: tuple[str, ...] = ()) -> Experiment:
    return Experiment(name=name, architectures=list(archs), seeds=[0], store=store,
                      overrides=TINY_RUN + list(extra), runs_root=runs_root)


def wait_for_jobs(experiment: str, index: ExperimentIndex, timeout: float = 240,
                  until=None) -> list:
    """Poll ``collect_status`` until ``until(rows)`` (default: every job ended and accounted)."""
    from steelseg_hpc.compute.slurm import TERMINAL_STATES
    from steelseg_hpc.launch.status import collect_status

    until = until or (lambda rows: all(row.state in TERMINAL_STATES for row in rows))
    deadline = time.monotonic() + timeout
    while True:
        rows = collect_status(experiment, index)
        if rows and until(rows):
            return rows
        if time.monotonic() > deadline:
            states = {row.job_id: (row.state, row.reason) for row in rows}
            pytest.fail(f"jobs of {experiment} did not get there within {timeout:.0f} s: {states}")
        time.sleep(0.5)


def sacct_states(job_id: str) -> list[str]:
    """Every state this job went through, including requeued attempts (``sacct -D``)."""
    out = subprocess.run(["sacct", "-X", "-D", "-P", "-n", "-j", job_id.split("_")[0], "-o", "JobID,State"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split("|")[1] for line in out.splitlines() if line.split("|")[0] == job_id]
