"""Dask clusters for data prep: a LocalCluster, or dask-jobqueue workers as SLURM jobs.

``steelseg-hpc prep --dask-cluster slurm --profile PROFILE`` asks :func:`make_dask_cluster` for a
SLURMCluster whose worker jobs get the profile's partition, account, qos, time limit, memory and
setup lines; each worker is one single-process SLURM job. GPUs are never requested for prep.

Example:
    >>> from dask.distributed import Client
    >>> cluster = make_dask_cluster("slurm", 2, "launch/local-cluster.toml")  # doctest: +SKIP
    >>> client = Client(cluster); client.wait_for_workers(2)                 # doctest: +SKIP
    >>> cluster.close()  # cancels the worker jobs                            # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from steelseg_hpc.errors import ConfigError
from steelseg_hpc.launch.config import ClusterProfile, load_profile


def _walltime(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def slurm_cluster_options(profile: ClusterProfile, log_directory: str | Path) -> dict[str, Any]:
    """Keyword arguments for ``dask_jobqueue.SLURMCluster`` from a profile.

    Example:
        >>> opts = slurm_cluster_options(ClusterProfile(partition="gpu", time_min=90), "/tmp/x")
        >>> opts["queue"], opts["walltime"], opts["cores"]
        ('gpu', '01:30:00', 1)
    """
    directives = []
    if profile.qos:
        directives.append(f"--qos={profile.qos}")
    if profile.constraint:
        directives.append(f"--constraint={profile.constraint}")
    for key, value in profile.slurm_extra.items():
        directives.append(f"--{key}" if value is True else f"--{key}={value}")
    options: dict[str, Any] = {
        "queue": profile.partition,
        "account": profile.account,
        "cores": profile.cpus_per_task,
        "processes": 1,
        "memory": f"{profile.mem_gb}GB",
        "walltime": _walltime(profile.time_min),
        "job_script_prologue": list(profile.setup),
        "job_extra_directives": directives,
        "python": profile.python or sys.executable,
        "log_directory": str(log_directory),
        "silence_logs": logging.ERROR,
    }
    if profile.dask_interface:
        options["interface"] = profile.dask_interface
        options["scheduler_options"] = {"interface": profile.dask_interface,
                                        "dashboard_address": None}
    else:
        options["scheduler_options"] = {"dashboard_address": None}
    return options


def _as_profile(profile: ClusterProfile | str | Path | None) -> ClusterProfile:
    if profile is None:
        raise ConfigError("--dask-cluster slurm needs a cluster profile: --profile launch/NAME.toml")
    if isinstance(profile, ClusterProfile):
        return profile
    return load_profile(profile)


def make_dask_cluster(kind: str, workers: int, profile: ClusterProfile | str | Path | None = None,
                      log_directory: str | Path | None = None) -> Any:
    """A Dask cluster with ``workers`` single-threaded worker processes.

    Args:
        kind: ``"local"`` (a LocalCluster), ``"slurm"`` (a SLURMCluster from ``profile``) or a
            scheduler address such as ``"tcp://10.0.0.5:8786"`` (returned as is: connect a
            ``Client`` to it).
        workers: worker processes; on SLURM one job each, asked for right away.
        profile: a cluster profile or its TOML path (``kind="slurm"`` only).
        log_directory: where the worker jobs' logs go (default: ``$STEELSEG_DASK_LOG_DIR``, else
            ``steelseg-dask-logs`` in the temp dir).

    Raises:
        ConfigError: ``kind="slurm"`` without a profile, or a bad profile.
        LaunchError: the profile does not fit the cluster (unknown partition, ...).
    """
    if workers < 1:
        raise ConfigError(f"a Dask cluster needs at least one worker, got {workers}")
    if kind == "local":
        from dask.distributed import LocalCluster

        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                            dashboard_address=None, silence_logs=logging.ERROR)
    if kind != "slurm":
        if "://" not in kind and ":" not in kind:
            raise ConfigError(f"--dask-cluster {kind!r}: expected local, slurm or a scheduler "
                              "address like tcp://HOST:8786")
        return kind
    resolved = _as_profile(profile)
    from steelseg_hpc.launch.validate import check_profile

    check_profile(resolved.model_copy(update={"executor": "slurm", "gpus_per_node": 0,
                                              "tasks_per_node": None}))
    from dask_jobqueue import SLURMCluster

    log_directory = (log_directory or os.environ.get("STEELSEG_DASK_LOG_DIR")
                     or Path(tempfile.gettempdir()) / "steelseg-dask-logs")
    Path(log_directory).mkdir(parents=True, exist_ok=True)
    cluster = SLURMCluster(**slurm_cluster_options(resolved, log_directory))
    cluster.scale(jobs=workers)
    return cluster
