"""Refuse a bad submission at submit time, not as a dead job an hour later.

:func:`check_profile` asks SLURM (``sinfo``) whether the profile's partition exists and whether its
nodes have the GPUs, CPUs and memory one job asks for. :func:`check_experiment` checks the store,
the architecture names and every run's config before anything is submitted. Both raise a
one-line :class:`~steelseg_hpc.errors.LaunchError` or :class:`~steelseg_hpc.errors.ConfigError`.

Example:
    >>> from steelseg_hpc.launch.config import ClusterProfile
    >>> check_profile(ClusterProfile(executor="slurm", partition="nope"))  # doctest: +SKIP
    Traceback (most recent call last):
    LaunchError: partition 'nope' does not exist on this cluster; partitions: gpu
"""
from __future__ import annotations

from pathlib import Path

from steelseg_hpc.errors import ConfigError, DataError, LaunchError
from steelseg_hpc.launch import slurm
from steelseg_hpc.launch.config import ClusterProfile, Experiment


def check_profile(profile: ClusterProfile) -> None:
    """Check a SLURM profile against the cluster; the local executor needs no check.

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


def check_store(store: Path) -> None:
    """The store must exist and be a complete prepared store."""
    if not store.exists():
        raise LaunchError(f"store {store} does not exist (make it with: steelseg-hpc prep SPEC "
                          f"--out {store})")
    from steelseg_hpc.data import open_store

    try:
        open_store(store)
    except DataError as exc:
        raise LaunchError(f"store {store} cannot be used: {exc}") from None


def check_architectures(names: list[str]) -> None:
    """Every name must be registered in the model zoo."""
    from steelseg_hpc.models import list_models

    known = list_models()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"unknown architecture(s) {', '.join(map(repr, unknown))}; "
                          f"choose from: {', '.join(known)}")


def check_experiment(experiment: Experiment) -> None:
    """Check store, architectures, run config file and every run's resolved config.

    Raises:
        LaunchError: missing store. ConfigError: unknown architecture or a bad override.
    """
    check_store(experiment.store)
    check_architectures(experiment.architectures)
    if experiment.run_config is not None and not experiment.run_config.is_file():
        raise ConfigError(f"run config {experiment.run_config} does not exist")
    from steelseg_hpc.launch.job import TrainingJob

    for run in experiment.runs():
        job = TrainingJob(run.arch, run.seed, experiment.store, experiment.run_config,
                          run.overrides, run.run_dir)
        try:
            job.load_config()
        except ConfigError as exc:
            raise ConfigError(f"{run.name}: {exc}") from None
