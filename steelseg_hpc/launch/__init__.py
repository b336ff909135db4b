"""Launch training on SLURM (or locally) with submitit; index, watch and cancel the jobs.

``launch_experiment`` validates and submits an experiment; ``collect_status`` joins SLURM's view
with each run directory; ``make_dask_cluster`` gives ``prep`` its Dask workers on SLURM.
"""
from steelseg_hpc.launch.config import (
    DEFAULT_ARCHITECTURES,
    ClusterProfile,
    Experiment,
    load_experiment,
    load_profile,
)
from steelseg_hpc.launch.control import cancel, job_logs
from steelseg_hpc.launch.dask_cluster import make_dask_cluster
from steelseg_hpc.launch.executor import Executor
from steelseg_hpc.launch.index import ExperimentIndex, JobRow
from steelseg_hpc.launch.job import TrainingJob
from steelseg_hpc.launch.status import JobStatus, collect_status
from steelseg_hpc.launch.submit import launch_experiment, submit_experiment

__all__ = [
    "DEFAULT_ARCHITECTURES",
    "ClusterProfile",
    "Executor",
    "Experiment",
    "ExperimentIndex",
    "JobRow",
    "JobStatus",
    "TrainingJob",
    "cancel",
    "collect_status",
    "job_logs",
    "launch_experiment",
    "load_experiment",
    "load_profile",
    "make_dask_cluster",
    "submit_experiment",
]
