"""A real multi-node SLURM on this machine: 3 nodes, each a slurmd with its own hostname and address
(its own UTS and network namespace), and a DeepSpeed job across two of them.

The module reshapes the local cluster to 3 nodes and back to the 1-node default when it is done.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
from click.testing import CliRunner

from steelseg_hpc.cli import main
from steelseg_hpc.core import rundir

from .conftest import REPO, SMOKE

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
    _run("bash", str(SCRIPTS / "up"), "--nodes", "3")
    try:
        yield NODES
    finally:
        _run("bash", str(SCRIPTS / "up"))  # back to the 1-node default the other tests use


def test_three_nodes_each_with_its_own_hostname_address_and_gpus(three_nodes):
    assert _node_states() == {node: "idle" for node in three_nodes}
    assert set(_run("sinfo", "-h", "-N", "-o", "%G").split()) == {"gpu:2"}
    seen = _run("srun", "-N", "3", "--ntasks-per-node=1", "--gpus-per-node=1", "bash", "-c",
                'echo "$(hostname) $(hostname -I) $CUDA_VISIBLE_DEVICES"').splitlines()
    by_host = {line.split()[0]: line.split()[1:] for line in seen}
    assert sorted(by_host) == list(three_nodes)
    assert sorted(address for address, _ in by_host.values()) == ["10.77.0.11", "10.77.0.12", "10.77.0.13"]
    assert {gpu for _, gpu in by_host.values()} == {"0"}


def test_a_crashed_node_goes_down_and_comes_back_with_up(three_nodes):
    _run("bash", str(SCRIPTS / "crash-node"), "n2")
    deadline = time.monotonic() + 120
    while not _node_states()["n2"].startswith("down"):
        assert time.monotonic() < deadline, _node_states()
        time.sleep(1)
    _run("bash", str(SCRIPTS / "up"), "--nodes", "3")
    assert _node_states() == {node: "idle" for node in three_nodes}


def _launch(tiny_store, runs_root, index, *profile) -> list[dict]:
    result = CliRunner().invoke(main, [
        "launch", str(SMOKE), "--profile", "local-cluster", *profile, "--set", f"store={tiny_store}",
        "--set", f"runs_root={runs_root}", "--set", "architectures=['unet3plus']", "--set", "seeds=[0]",
        "--wait"], env={"STEELSEG_INDEX": str(index)})
    assert result.exit_code == 0, result.output
    status = CliRunner().invoke(main, ["status", "smoke", "--json"], env={"STEELSEG_INDEX": str(index)})
    return json.loads(status.output)["jobs"]


def test_a_two_node_run_trains_as_a_two_rank_run_on_one_node(three_nodes, tiny_store, tmp_path):
    # gloo across two network namespaces: the rendezvous is the first host of the job's node list.
    (two_nodes,) = _launch(tiny_store, tmp_path / "two-nodes", tmp_path / "a.sqlite", "--profile-set", "nodes=2",
                           "--profile-set", "tasks_per_node=1", "--profile-set", "gpus_per_node=1")
    (one_node,) = _launch(tiny_store, tmp_path / "one-node", tmp_path / "b.sqlite", "--profile-set", "nodes=1",
                          "--profile-set", "tasks_per_node=2", "--profile-set", "gpus_per_node=2")
    assert two_nodes["node"] == "n[1-2]" and "," not in one_node["node"] and "[" not in one_node["node"]
    rows = [rundir.read_metrics(job["run_dir"]) for job in (two_nodes, one_node)]
    assert [r.world_size for r in rows[0]] == [r.world_size for r in rows[1]] == [2, 2]
    for across, within in zip(*rows):  # same seed, same shards, same all-reduce: the same numbers
        assert across.train_loss == pytest.approx(within.train_loss, rel=1e-6)
        assert across.val_dice == pytest.approx(within.val_dice, rel=1e-6)
