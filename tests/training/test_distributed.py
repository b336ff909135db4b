"""Rank and rendezvous come from torchrun, SLURM, or default to a single process."""
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from steelseg_hpc.core.errors import TrainingError
from steelseg_hpc.training.distributed import agree_on_port, port_is_free, resolve_dist_env


def test_torchrun_variables_win():
    env = resolve_dist_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "n1",
                            "MASTER_PORT": "1234", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port) == (3, 4, 1, "n1", 1234)
    assert env.launcher == "torchrun"


def test_slurm_variables_and_master_from_node_list():
    environ = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_NUM_NODES": "4",
               "SLURM_JOB_NODELIST": "gpu-a[003-004,010],gpu-b7", "SLURM_JOB_ID": "4242"}
    env = resolve_dist_env(environ)
    assert (env.rank, env.world_size, env.local_rank, env.launcher) == (5, 8, 1, "slurm")
    assert env.master_addr == "gpu-a003"
    assert env.master_port == resolve_dist_env(dict(environ, SLURM_PROCID="0")).master_port  # all tasks agree
    assert env.as_environ()["RANK"] == "5"


def test_single_process_gets_a_complete_environment():
    env = resolve_dist_env({})
    assert (env.rank, env.world_size, env.local_rank, env.launcher) == (0, 1, 0, "single")
    assert set(env.as_environ()) == {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}
    assert env.master_port > 0


def test_one_node_job_rendezvous_on_loopback_and_requeue_keeps_the_port():
    environ = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LOCALID": "1", "SLURM_JOB_NUM_NODES": "1",
               "SLURM_JOB_NODELIST": "node7", "SLURM_JOB_ID": "77"}
    env = resolve_dist_env(environ)
    assert env.master_addr == "127.0.0.1" and env.world_size == 2
    assert resolve_dist_env(dict(environ)).master_port == env.master_port
    assert resolve_dist_env(dict(environ, SLURM_JOB_ID="78")).master_port != env.master_port


def test_submitit_local_executor_tasks():
    environ = {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "9001", "SUBMITIT_LOCAL_NTASKS": "2",
               "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_LOCALID": "1"}
    env = resolve_dist_env(environ)
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.launcher) == (1, 2, 1, "127.0.0.1", "local")


def _job_with_a_free_port(environ: dict) -> tuple[dict, int]:
    """A job id whose submitit port nobody on this machine holds (CI machines run other things)."""
    for job_id in range(77, 1077):
        candidate = dict(environ, SLURM_JOB_ID=str(job_id))
        port = resolve_dist_env(dict(candidate, SLURM_NTASKS="2")).master_port
        if port_is_free(port):
            return candidate, port
    raise AssertionError("no free port among a thousand job ids")


def test_a_one_task_job_rendezvous_on_a_port_that_is_free():
    """submitit's port comes from the job id and may be held by another job's connection."""
    environ, taken = _job_with_a_free_port({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0",
                                            "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "node7"})
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        port = resolve_dist_env(environ).master_port
        assert port != taken
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", port))
    assert resolve_dist_env(dict(environ, MASTER_PORT="29511")).master_port == 29511


TWO_NODES = {"SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "n[1-2]"}


def _rank(environ: dict, rank: int) -> dict:
    return dict(environ, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank % 2))


def test_the_ranks_of_a_job_agree_on_the_job_ids_port_when_it_is_free(tmp_path):
    environ, port = _job_with_a_free_port(TWO_NODES)
    ranks = [_rank(environ, rank) for rank in range(4)]
    agreed = [agree_on_port(resolve_dist_env(r), tmp_path, r).master_port for r in ranks]  # rank 0 first
    assert agreed == [port] * 4


def test_when_the_job_ids_port_is_held_rank_0_picks_a_free_one_and_the_others_wait_for_it(tmp_path):
    environ, taken = _job_with_a_free_port(TWO_NODES)
    ranks = [_rank(environ, rank) for rank in range(4)]
    with ThreadPoolExecutor(4) as pool, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("", taken))
        holder.listen()
        waiting = [pool.submit(agree_on_port, resolve_dist_env(r), tmp_path, r) for r in ranks[1:]]
        time.sleep(0.5)  # the other ranks start first and must wait for rank 0
        assert not any(future.done() for future in waiting)
        chosen = agree_on_port(resolve_dist_env(ranks[0]), tmp_path, ranks[0]).master_port
        assert chosen != taken and port_is_free(chosen)
        assert [future.result(timeout=10).master_port for future in waiting] == [chosen] * 3


def test_a_requeued_attempt_does_not_read_the_port_of_the_attempt_before(tmp_path):
    environ, _ = _job_with_a_free_port(TWO_NODES)
    agree_on_port(resolve_dist_env(_rank(environ, 0)), tmp_path, _rank(environ, 0))
    requeued = _rank(dict(environ, SLURM_RESTART_COUNT="1"), 1)
    with pytest.raises(TrainingError, match="rank 1 waited 1 s for rank 0 to publish the rendezvous port"):
        agree_on_port(resolve_dist_env(requeued), tmp_path, requeued, timeout_s=1)
