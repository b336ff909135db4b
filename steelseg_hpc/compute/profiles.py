"""Cluster profiles: where and with which resources jobs (training runs, Dask workers) run.

A profile (``launch/*.toml``) holds generic resource names (``gpus_per_node``, ``time_min``,
``mem_gb``) that mean the same for the local and the SLURM executor, plus ``slurm_extra`` for any
other ``sbatch`` option. ``prep`` (Dask workers) and ``launch`` (training jobs) share profiles.
A profile is named by its path or, like submitit/hydra configs, by its name: ``local-cluster``
finds ``launch/local-cluster.toml`` in the current folder or the nearest parent that has one, else
the copy shipped with the package (:mod:`steelseg_hpc.core.shipped`).

Example:
    >>> profile = ClusterProfile(executor="slurm", partition="gpu", gpus_per_node=2)
    >>> profile.tasks(), profile.world_size()
    (2, 2)
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from steelseg_hpc.compute import slurm
from steelseg_hpc.core.config import StrictModel, load_toml
from steelseg_hpc.core.errors import ConfigError, LaunchError
from steelseg_hpc.core.shipped import NamedFile, find_named, known_names

#: Folder (relative to the project root) where profiles are looked up by name.
PROFILE_FOLDER = "launch"


class ClusterProfile(StrictModel):
    """Where jobs run and with which resources (one job = one training run).

    Attributes:
        executor: ``slurm`` submits with sbatch; ``local`` runs jobs as processes on this machine.
        tasks_per_node: processes per node; by default one per GPU (one without GPUs).
        setup: shell lines run before the job starts (``module load``, venv activation, exports).
        python: the interpreter jobs run (default: the one that submits).
        max_requeues: how often a job may be requeued after a time-out or a preemption.
        signal_delay_s: how long before the time limit SLURM warns the job (USR2) to checkpoint.
        slurm_extra: further ``sbatch`` options, e.g. ``{"exclude" = "node7"}``.
        dask_interface: network interface for Dask on SLURM (``"lo"`` on a one-node cluster,
            ``"ib0"`` for InfiniBand); ``None`` lets Dask choose.
    """

    executor: Literal["slurm", "local"] = "slurm"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    tasks_per_node: int | None = Field(None, ge=1)
    cpus_per_task: int = Field(1, ge=1)
    mem_gb: float = Field(4.0, gt=0)
    time_min: int = Field(60, ge=1)
    setup: list[str] = []
    python: str | None = None
    array_parallelism: int = Field(64, ge=1)
    max_requeues: int = Field(3, ge=0)
    signal_delay_s: int = Field(90, ge=0)
    slurm_extra: dict[str, str | int | bool] = {}
    dask_interface: str | None = None

    @model_validator(mode="after")
    def _one_task_per_gpu(self) -> "ClusterProfile":
        if self.gpus_per_node and self.tasks_per_node not in (None, self.gpus_per_node):
            raise ValueError(
                f"tasks_per_node={self.tasks_per_node} but gpus_per_node={self.gpus_per_node}: "
                "training runs one task per GPU (leave tasks_per_node out)"
            )
        if self.executor == "local" and self.nodes > 1:
            raise ValueError("the local executor runs on this machine only: set nodes = 1")
        return self

    def tasks(self) -> int:
        """Processes per node: ``tasks_per_node``, else one per GPU, else 1."""
        return self.tasks_per_node or self.gpus_per_node or 1

    def world_size(self) -> int:
        """Processes of one job across all its nodes (the torch.distributed world size)."""
        return self.tasks() * self.nodes


def resolve_profile_path(name_or_path: str | Path, start: Path | None = None) -> Path:
    """The TOML file of a profile given by path or by name (``local-cluster``).

    Raises:
        ConfigError: neither a file nor a known profile name (the message lists the known ones).

    Example:
        >>> resolve_profile_path("local-cluster").name  # doctest: +SKIP
        'local-cluster.toml'
    """
    return find_profile(name_or_path, start).path


def find_profile(name_or_path: str | Path, start: Path | None = None) -> NamedFile:
    """The profile given by path or by name, and where it was found (``describe()`` says).

    Raises:
        ConfigError: neither a file nor a known profile name (the message lists the known ones).
    """
    found = find_named("profile", name_or_path, start)
    if found is not None:
        return found
    known = known_names("profile", start)
    hint = f"; known profiles: {', '.join(known)}" if known else f"; no {PROFILE_FOLDER}/ folder here or above"
    raise ConfigError(f"--profile {name_or_path}: no such file or profile name{hint}")


def load_profile(name_or_path: str | Path, overrides: list[str] | None = None) -> ClusterProfile:
    """Load a cluster profile by path or name (``--set`` style overrides allowed).

    Example:
        >>> load_profile("local-cluster").partition  # doctest: +SKIP
        'gpu'
    """
    return load_toml(resolve_profile_path(name_or_path), ClusterProfile, overrides)


def check_profile(profile: ClusterProfile) -> None:
    """Check a SLURM profile against the cluster (``sinfo``); the local executor needs no check.

    Raises:
        LaunchError: no SLURM, unknown partition, or a job larger than any node of it.
    """
    if profile.executor != "slurm":
        return
    if not slurm.slurm_available():
        raise LaunchError("the profile uses executor 'slurm' but no SLURM controller answers "
                          "(is sinfo on PATH? locally: launch/local-cluster/up)")
    by_partition = slurm.partitions()
    if profile.partition is None:
        nodes = [node for group in by_partition.values() for node in group]
        where = "any partition"
    elif profile.partition not in by_partition:
        known = ", ".join(sorted(by_partition)) or "none"
        raise LaunchError(f"partition {profile.partition!r} does not exist on this cluster; "
                          f"partitions: {known}")
    else:
        nodes = by_partition[profile.partition]
        where = f"partition {profile.partition!r}"
    if not nodes:
        raise LaunchError(f"{where} has no nodes")
    if profile.nodes > len(nodes):
        raise LaunchError(f"the profile asks for {profile.nodes} nodes but {where} has {len(nodes)}")
    _check_largest(profile.gpus_per_node, max(n.gpus for n in nodes), "GPUs", where)
    _check_largest(profile.tasks() * profile.cpus_per_task, max(n.cpus for n in nodes),
                   "CPUs (tasks_per_node x cpus_per_task)", where)
    _check_largest(int(profile.mem_gb * 1024), max(n.memory_mb for n in nodes), "MB of memory",
                   where)


def _check_largest(asked: int, largest: int, what: str, where: str) -> None:
    if asked > largest:
        raise LaunchError(f"the profile asks for {asked} {what} per node but the nodes of {where} "
                          f"have at most {largest}")
