"""A real multi-node SLURM on this machine: 3 nodes, each a slurmd with its own hostname and address
(its own UTS and network namespace), and a DeepSpeed job across two of them.

The module reshapes the local cluster to 3 nodes and back to the 1-node default when it is done.
"""
from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from steelseg_hpc.cli import main
from steelseg_hpc.core import rundir
from steelseg_hpc.core.errors import TrainingError
from steelseg_hpc.launch import submit_experiment
from steelseg_hpc.launch.submit import plan_experiment
from steelseg_hpc.launch.config import load_experiment
from steelseg_hpc.launch.index import ExperimentIndex
from steelseg_hpc.launch.status import collect_status
from steelseg_hpc.sweeps.study import open_storage
from steelseg_hpc.training.checkpoints import CheckpointManager

from .conftest import REPO, SMOKE, cluster_profile, sacct_states, wait_for_jobs, wait_for_marker

pytestmark = [pytest.mark.slow, pytest.mark.slurm, pytest.mark.multinode]
SCRIPTS = REPO / "launch" / "local-cluster"
NODES = ("n1", "n2", "n3")


def _run(*command: str, timeout: float = 180) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr or done.stdout}"
    return done.stdout


def _node_states() -> dict[str, str]:
    return dict(line.split() for line in _run("sinfo", "-h", "-N", "-o", "%N %t").splitlines())


@pytest.fixture(scope="module")
def three_nodes():
    if shutil.which("sinfo") is None:
        pytest.skip("SLURM is not installed (no sinfo on PATH); run launch/local-cluster/up")
    try:
        _run("bash", str(SCRIPTS / "up"), "--nodes", "3")
        yield NODES
    finally:
        _run("bash", str(SCRIPTS / "up"))  # back to the 1-node default the other tests use, even after a failure


def test_three_nodes_each_with_its_own_hostname_address_and_gpus(three_nodes):
    assert _node_states() == {node: "idle" for node in three_nodes}
    assert set(_run("sinfo", "-h", "-N", "-o", "%G").split()) == {"gpu:2"}
    seen = _run("srun", "-N", "3", "--ntasks-per-node=1", "--gpus-per-node=1", "bash", "-c",
                'echo "$(hostname) $(hostname -I) $CUDA_VISIBLE_DEVICES"').splitlines()
    by_host = {line.split()[0]: line.split()[1:] for line in seen}
    assert sorted(by_host) == list(three_nodes)
    assert sorted(address for address, _ in by_host.values()) == ["10.77.0.11", "10.77.0.12", "10.77.0.13"]
    assert {gpu for _, gpu in by_host.values()} == {"0"}


def _launch(tiny_store, runs_root, index, *profile) -> list[dict]:
    result = CliRunner().invoke(main, [
        "launch", str(SMOKE), "--profile", "local-cluster", *profile, "--set", f"store={tiny_store}",
        "--set", f"runs_root={runs_root}", "--set", "architectures=['unet3plus']", "--set", "seeds=[0]",
        "--wait"], env={"STEELSEG_INDEX": str(index)})
    assert result.exit_code == 0, result.output
    status = CliRunner().invoke(main, ["status", "smoke", "--json"], env={"STEELSEG_INDEX": str(index)})
    return json.loads(status.output)["jobs"]


TWO_NODES = ("--profile-set", "nodes=2", "--profile-set", "tasks_per_node=1", "--profile-set", "gpus_per_node=1")


@pytest.fixture(scope="module")
def two_node_run(three_nodes, tiny_store, tmp_path_factory) -> dict:
    """An uninterrupted 2-node run of the smoke experiment's unet3plus (its status row)."""
    root = tmp_path_factory.mktemp("two-nodes")
    (row,) = _launch(tiny_store, root / "runs", root / "index.sqlite", *TWO_NODES)
    return row


def test_a_two_node_run_trains_as_a_two_rank_run_on_one_node(two_node_run, tiny_store, tmp_path):
    # gloo across two network namespaces: the rendezvous is the first host of the job's node list.
    two_nodes = two_node_run
    (one_node,) = _launch(tiny_store, tmp_path / "one-node", tmp_path / "b.sqlite", "--profile-set", "nodes=1",
                          "--profile-set", "tasks_per_node=2", "--profile-set", "gpus_per_node=2")
    assert two_nodes["node"] == "n[1-2]" and "," not in one_node["node"] and "[" not in one_node["node"]
    rows = [rundir.read_metrics(job["run_dir"]) for job in (two_nodes, one_node)]
    assert [r.world_size for r in rows[0]] == [r.world_size for r in rows[1]] == [2, 2]
    for across, within in zip(*rows):  # same seed, same shards, same all-reduce: the same numbers
        assert across.train_loss == pytest.approx(within.train_loss, rel=1e-6)
        assert across.val_dice == pytest.approx(within.val_dice, rel=1e-6)


def test_two_nodes_of_two_ranks_each_save_four_shards(three_nodes, tiny_store, tmp_path):
    (job,) = _launch(tiny_store, tmp_path / "runs", tmp_path / "index.sqlite", "--profile-set", "nodes=2",
                     "--profile-set", "gpus_per_node=2")
    assert job["node"] == "n[1-2]"
    assert [row.world_size for row in rundir.read_metrics(job["run_dir"])] == [4, 4]
    stdout = Path(job["stdout"])  # task 0's log; submitit writes one per task
    lines = [line for log in stdout.parent.glob(f"{job['job_id']}_*_log.out") for line in log.read_text().splitlines()]
    ranks = {re.search(r"\| rank (\d)/4 on (\w+)", line).groups() for line in lines if "| rank " in line}
    assert ranks == {("0", "n1"), ("1", "n1"), ("2", "n2"), ("3", "n2")}
    best = CheckpointManager(Path(job["run_dir"]) / "checkpoints", is_main=False).best_tag()
    shards = sorted(p.name for p in (Path(job["run_dir"]) / "checkpoints" / best).glob("*optim_states.pt"))
    assert shards == [f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" for rank in range(4)] or \
        shards == [f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" for rank in range(4)]


def test_a_node_crash_mid_epoch_requeues_the_job_and_it_resumes_as_if_uninterrupted(
        two_node_run, tiny_store, tmp_path, index, pause_jobs_at_forward):
    # 2 ranks: an epoch is 3 optimiser steps of 2 micro-batches per rank; forward 9 is in epoch 2's
    # second step, after epoch 1's checkpoint, so the job loses part of an epoch and nothing more.
    paused = pause_jobs_at_forward(9)
    experiment = load_experiment(SMOKE, [f"store={tiny_store}", f"runs_root={tmp_path}",
                                         "architectures=['unet3plus']", "seeds=[0]"])
    (row,) = submit_experiment(experiment, cluster_profile(nodes=2, tasks_per_node=1, gpus_per_node=1), index)
    try:
        wait_for_marker(paused, row, index)
        (running,) = collect_status("smoke", index)
        assert running.node == "n[1-2]"
        _run("bash", str(SCRIPTS / "crash-node"), "n2")
        (status,) = wait_for_jobs("smoke", index, timeout=300)
        assert _node_states()["n2"].startswith("down")  # SLURM saw the node die
    finally:
        _run("bash", str(SCRIPTS / "up"), "--nodes", "3")
    assert _node_states() == {node: "idle" for node in NODES}  # and `up` brought it back
    assert status.state == "COMPLETED", (status.reason, status.stderr_tail)
    assert sacct_states(row.job_id)[0] == "NODE_FAIL", sacct_states(row.job_id)
    assert status.node == "n[1,3]"  # SLURM requeued it onto the two nodes that were up
    assert any("NODE_FAIL" in requeue for requeue in status.requeues), status.requeues
    shown = CliRunner().invoke(main, ["status", "smoke"], env={"STEELSEG_INDEX": str(index.path)})
    assert "requeued" in shown.output and "node failure" in shown.output, shown.output
    rows, reference = rundir.read_metrics(status.run_dir), rundir.read_metrics(two_node_run["run_dir"])
    assert [r.epoch for r in rows] == [1, 2]  # epoch 2 trained again from epoch 1's checkpoint, once
    for resumed, uninterrupted in zip(rows, reference):
        assert resumed.train_loss == pytest.approx(uninterrupted.train_loss, rel=1e-6)
        assert resumed.val_dice == pytest.approx(uninterrupted.val_dice, rel=1e-6)
    tags = [CheckpointManager(Path(run) / "checkpoints", is_main=False).best_tag()
            for run in (status.run_dir, two_node_run["run_dir"])]
    assert tags[0] == tags[1]
    # One node left of the two the run trained on: refused in one line, before anything is queued.
    extended = experiment.model_copy(update={"overrides": [*experiment.overrides, "epochs=3"]})
    with pytest.raises(TrainingError, match=r"trained on 2 rank\(s\).*this job has 1"):
        plan_experiment(extended, cluster_profile(nodes=1, tasks_per_node=1, gpus_per_node=1))


# A sitecustomize for the prep's Dask workers (SLURM jobs inherit PYTHONPATH): the first shard task
# on any node claims the marker (written atomically, so one task only), names its node in it and
# hangs, so the test can crash that node while the task is in flight.
HANG_HOOK = """
import os, socket
if os.environ.get("STEELSEG_TEST_HANG_MARKER") and socket.gethostname().startswith("n"):
    import time
    from steelseg_hpc.data import prep

    original = prep.write_shard

    def hanging(*args, **kwargs):
        try:
            with open(os.environ["STEELSEG_TEST_HANG_MARKER"], "x") as marker:
                marker.write(socket.gethostname())
        except FileExistsError:
            return original(*args, **kwargs)
        time.sleep(600)

    prep.write_shard = hanging
"""


def _store_files(store: Path) -> dict[str, bytes]:
    return {str(path.relative_to(store)): path.read_bytes() for path in sorted(store.rglob("*")) if path.is_file()}


def test_prep_on_workers_across_three_nodes_survives_a_crashed_worker_node_and_writes_the_same_bytes(
        three_nodes, synthetic_raw, tiny_store, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HANG_HOOK)
    marker = tmp_path / "hung-on"
    # One worker per node (each takes a node's 2 CPUs); scheduler and workers meet on sgnet0, the
    # cluster network's name here and on every node.
    profile = tmp_path / "three-nodes.toml"
    profile.write_text((REPO / "launch" / "local-cluster.toml").read_text()
                       .replace('dask_interface = "lo"', 'dask_interface = "sgnet0"')
                       .replace("cpus_per_task = 1", "cpus_per_task = 2"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
               STEELSEG_TEST_HANG_MARKER=str(marker), STEELSEG_DASK_LOG_DIR=str(tmp_path / "dask-logs"))
    out = tmp_path / "three-nodes.zarr"
    prep = subprocess.Popen([sys.executable, "-m", "steelseg_hpc", "prep", str(synthetic_raw), "--out", str(out),
                             "--workers", "3", "--dask-cluster", "slurm", "--profile", str(profile)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists() or not marker.read_text():
            assert prep.poll() is None, prep.communicate()[0]
            assert time.monotonic() < deadline, "no shard task started on a node"
            time.sleep(0.2)
        hosts = set(_run("squeue", "-h", "-n", "dask-worker", "-t", "running", "-o", "%N").split())
        assert hosts == set(three_nodes)  # one worker on each node
        _run("bash", str(SCRIPTS / "crash-node"), marker.read_text())
        output, _ = prep.communicate(timeout=300)
    finally:
        prep.kill()
        _run("bash", str(SCRIPTS / "up"), "--nodes", "3")
    assert prep.returncode == 0, output
    assert f"lost the Dask worker on {marker.read_text()}" in " ".join(output.split()), output
    assert _store_files(out) == _store_files(tiny_store)  # the crashed node's task was rerun elsewhere


# A sitecustomize for the sweep's trial jobs: each job's 2nd training forward writes held-JOBID
# (naming its node) and waits until the test writes `release`; jobs started after that never wait.
HOLD_HOOK = """
import os
if os.environ.get("STEELSEG_TEST_HOLD_DIR") and os.environ.get("SLURM_JOB_ID"):
    import socket, time
    from pathlib import Path
    from steelseg_hpc.training import engine

    folder = Path(os.environ["STEELSEG_TEST_HOLD_DIR"])
    calls = {"n": 0}
    original = engine.TrainStep.fp32_loss

    def holding(self, logits, masks):
        calls["n"] += self.training
        if self.training and calls["n"] == 2 and not (folder / "release").exists():
            (folder / f"held-{os.environ['SLURM_JOB_ID']}").write_text(socket.gethostname())
            deadline = time.time() + 300
            while not (folder / "release").exists() and time.time() < deadline:
                time.sleep(0.1)
        return original(self, logits, masks)

    engine.TrainStep.fp32_loss = holding
"""

SWEEP = """name = "acrossnodes"
store = "{store}"
profile = "{profile}"
runs_root = "{root}"
parallel = 4
retries = 1
[base]
arch = "sam-lora"
overrides = ["epochs=2", "data.num_workers=0", "data.max_train_tiles=8", "micro_batch=2", "grad_accumulation=2",
             "progress=false", 'precision="fp32"', "data.pin_memory=false", 'model.variant="tiny"',
             'model.prompt="none"']
[pruner]
kind = "none"
[space.rank]
key = "model.rank"
values = [2, 4, 8, 16]
"""


class _Lines:
    """The driver's output, read as it comes (so the test can wait for a line)."""

    def __init__(self, process: subprocess.Popen):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=lambda: self.lines.extend(process.stdout), daemon=True)
        self.thread.start()

    def wait_for(self, words: str, timeout: float, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + timeout
        while not any(words in " ".join(line.split()) for line in self.lines):
            assert process.poll() is None or self.thread.is_alive(), "".join(self.lines)
            assert time.monotonic() < deadline, f"no {words!r} within {timeout:.0f} s:\n" + "".join(self.lines)
            time.sleep(0.2)

    def text(self) -> str:
        return " ".join("".join(self.lines).split())


def _slurmctld_pid() -> int:
    return int((Path(os.environ.get("STEELSEG_SLURM_HOME", "/var/tmp/steelseg-slurm")) / "run" / "slurmctld.pid")
               .read_text())


def test_a_sweep_across_nodes_rides_out_a_controller_restart_and_retries_a_trial_lost_to_a_node_crash(
        three_nodes, tiny_store, tmp_path):
    hold = tmp_path / "hold"
    (hold / "hook").mkdir(parents=True)
    (hold / "hook" / "sitecustomize.py").write_text(HOLD_HOOK)
    spec = tmp_path / "acrossnodes.toml"
    spec.write_text(SWEEP.format(store=tiny_store, profile=REPO / "launch" / "local-cluster.toml", root=tmp_path))
    index = tmp_path / "index.sqlite"
    env = dict(os.environ, STEELSEG_INDEX=str(index), STEELSEG_TEST_HOLD_DIR=str(hold),
               PYTHONPATH=os.pathsep.join(filter(None, [str(hold / "hook"), os.environ.get("PYTHONPATH")])))
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    driver = subprocess.Popen([sys.executable, "-m", "steelseg_hpc", "sweep", str(spec)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = _Lines(driver)
    try:
        deadline = time.monotonic() + 240
        while len(held := list(hold.glob("held-*"))) < 4:  # all four trials in flight, in epoch 1
            assert driver.poll() is None, output.text()
            assert time.monotonic() < deadline, (output.text(), _run("squeue"))
            time.sleep(0.5)
        node_of = {path.name.removeprefix("held-"): path.read_text() for path in held}
        assert len(set(node_of.values())) == 3, node_of  # spread over the three nodes (LLN)
        # The controller dies and comes back: the driver's squeue calls go unanswered meanwhile.
        os.kill(_slurmctld_pid(), signal.SIGKILL)
        output.wait_for("SLURM is not answering (squeue", 60, driver)
        _run("bash", str(SCRIPTS / "up"), "--nodes", "3")
        output.wait_for("SLURM answers again", 120, driver)
        # A node with one trial on it crashes: that trial fails with the reason and runs again.
        lonely = min(sorted(set(node_of.values())), key=list(node_of.values()).count)
        _run("bash", str(SCRIPTS / "crash-node"), lonely)
        output.wait_for("node failure", 180, driver)
        (hold / "release").write_text("go")
        driver.wait(timeout=480)
    finally:
        (hold / "release").write_text("go")
        driver.kill()
        _run("bash", str(SCRIPTS / "up"), "--nodes", "3")
    output.thread.join(timeout=10)
    assert driver.returncode == 0, output.text()
    study = optuna.load_study(study_name="acrossnodes", storage=open_storage(str(tmp_path / "acrossnodes" / "study.journal")))
    trials = study.get_trials()
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]
    lost_job = failed.user_attrs["job_id"]
    assert node_of[lost_job] == lonely and f"node failure on {lonely}" in failed.user_attrs["fail_reason"]
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == failed.number]
    assert retry.state == TrialState.COMPLETE and retry.params == failed.params
    assert sorted(t.params["rank"] for t in trials if t.state == TrialState.COMPLETE) == [2, 4, 8, 16]
    # Nothing lost, nothing submitted twice: five trials, five jobs, one each.
    jobs = ExperimentIndex(index).jobs("acrossnodes", latest_only=False)
    assert len(trials) == 5 and sorted(job.job_id for job in jobs) == sorted(t.user_attrs["job_id"] for t in trials)
    names = _run("sacct", "-X", "-n", "-P", "-S", started, "-o", "JobName,JobID").split()
    submitted = [name for name in names if name.split("|")[0].startswith("acrossnodes-t")]
    assert len(submitted) == len({line.split("|")[0] for line in submitted}) == 5, submitted
