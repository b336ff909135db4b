"""Rank and rendezvous come from torchrun, SLURM, or default to a single process."""
import socket

from steelseg_hpc.training.distributed import resolve_dist_env


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


def test_a_one_task_job_rendezvous_on_a_port_that_is_free():
    """submitit's port comes from the job id and may be held by another job's connection."""
    environ = {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0", "SLURM_JOB_NUM_NODES": "1",
               "SLURM_JOB_NODELIST": "node7", "SLURM_JOB_ID": "77"}
    taken = resolve_dist_env(dict(environ, SLURM_NTASKS="2")).master_port  # the job id's port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", taken))
        holder.listen()
        port = resolve_dist_env(environ).master_port
        assert port != taken
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", port))
    assert resolve_dist_env(dict(environ, MASTER_PORT="29511")).master_port == 29511
