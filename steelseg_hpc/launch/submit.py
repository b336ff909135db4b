"""Launch an experiment: validate, submit one training job per architecture × seed, index them.

Example:
    >>> jobs = launch_experiment("launch/experiments/smoke.toml", "launch/local-cluster.toml",
    ...                          overrides=["store=demo/store.zarr"])  # doctest: +SKIP
    >>> [(job.arch, job.job_id) for job in jobs]  # doctest: +SKIP
    [('unet3plus', '41_0'), ('elunet', '41_1')]
"""
from __future__ import annotations

from pathlib import Path

from steelseg_hpc.compute.profiles import ClusterProfile, check_profile, load_profile, resolve_profile_path
from steelseg_hpc.core.errors import LaunchError
from steelseg_hpc.launch.config import Experiment, find_experiment, load_experiment
from steelseg_hpc.launch.executor import Executor
from steelseg_hpc.launch.handle import handles_of, refresh, submit_indexed
from steelseg_hpc.launch.index import ExperimentIndex, JobRow
from steelseg_hpc.launch.job import TrainingJob
from steelseg_hpc.launch.validate import ResolvedRun, check_experiment


def _absolute(experiment: Experiment) -> Experiment:
    # Jobs may start in another working directory: pin every path now.
    update = {"store": experiment.store.absolute(), "runs_root": experiment.runs_root.absolute()}
    if experiment.run_config is not None:
        update["run_config"] = experiment.run_config.absolute()
    return experiment.model_copy(update=update)


def _refuse_active_duplicates(index: ExperimentIndex, experiment: Experiment) -> None:
    """Two live jobs writing one run directory would corrupt it."""
    if not index.path.exists() or not index.is_experiment(experiment.name):
        return
    handles = handles_of(experiment.name, index)
    refresh(handles)
    for handle in handles:
        if handle.active:
            row = handle.row
            raise LaunchError(f"{row.arch} seed {row.seed} is still in job {row.job_id} "
                              f"({row.run_dir}); wait for it or: steelseg-hpc cancel {experiment.name}")


def plan_experiment(experiment: Experiment, profile: ClusterProfile) -> list[ResolvedRun]:
    """Everything ``submit_experiment`` checks, without submitting: the jobs it would queue.

    Raises:
        LaunchError, ConfigError: the submission would fail (the profile does not fit the
        cluster, a store is missing, a run config does not resolve).
    """
    check_profile(profile)
    return check_experiment(_absolute(experiment), world_size=profile.world_size())


def submit_experiment(
    experiment: Experiment,
    profile: ClusterProfile,
    index: ExperimentIndex | None = None,
    experiment_file: str | None = None,
    profile_file: str | None = None,
) -> list[JobRow]:
    """Validate and submit ``experiment`` with ``profile``; record the jobs in ``index``.

    Returns:
        One row per job, in the experiment's (architecture, seed) order.

    Raises:
        LaunchError, ConfigError: the submission would fail; nothing was submitted.
    """
    index = index or ExperimentIndex()
    experiment = _absolute(experiment)
    resolved = plan_experiment(experiment, profile)
    _refuse_active_duplicates(index, experiment)

    jobs = [TrainingJob(item.run.run_dir, item.config, tuple(experiment.evaluate)) for item in resolved]
    executor = Executor(profile, experiment.folder() / "jobs", job_name=experiment.name)
    handles = submit_indexed(executor, jobs, experiment.name, index, on_accepted=lambda: index.record_experiment(
        experiment.name, experiment.folder(), experiment_file, profile_file, profile.executor))
    return [handle.row for handle in handles]


def _load(experiment_path, profile_path, overrides, profile_overrides
          ) -> tuple[Experiment, ClusterProfile, Path, Path]:
    experiment_file = find_experiment(experiment_path).path
    experiment = load_experiment(experiment_file, overrides)
    profile_file = resolve_profile_path(profile_path)
    return experiment, load_profile(profile_file, profile_overrides), experiment_file, profile_file


def plan_launch(
    experiment_path: str | Path,
    profile_path: str | Path,
    overrides: list[str] | None = None,
    profile_overrides: list[str] | None = None,
) -> tuple[Experiment, ClusterProfile, list[ResolvedRun]]:
    """``launch --dry-run``: load and check an experiment and a profile; submit nothing.

    Example:
        >>> experiment, profile, jobs = plan_launch("launch/experiments/smoke.toml", "local",
        ...                                         ["store=demo/store.zarr"])  # doctest: +SKIP
        >>> [(job.run.arch, job.config.epochs) for job in jobs]  # doctest: +SKIP
        [('unet3plus', 2), ('elunet', 2)]
    """
    experiment, profile, _, _ = _load(experiment_path, profile_path, overrides, profile_overrides)
    return experiment, profile, plan_experiment(experiment, profile)


def launch_experiment(
    experiment_path: str | Path,
    profile_path: str | Path,
    overrides: list[str] | None = None,
    profile_overrides: list[str] | None = None,
    index: ExperimentIndex | None = None,
) -> list[JobRow]:
    """Load an experiment and a profile from TOML (with overrides) and submit it.

    Args:
        profile_path: a profile TOML, or its name (``local-cluster`` finds
            ``launch/local-cluster.toml``).
        overrides: ``KEY=VALUE`` overrides of the experiment (``store=...``, ``seeds=[0,1]``).
        profile_overrides: ``KEY=VALUE`` overrides of the profile (``time_min=5``).
    """
    experiment, profile, experiment_file, profile_file = _load(experiment_path, profile_path, overrides,
                                                               profile_overrides)
    return submit_experiment(experiment, profile, index, str(experiment_file.absolute()),
                             str(profile_file.absolute()))
