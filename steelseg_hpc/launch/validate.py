"""Refuse a bad submission at submit time, not as a dead job an hour later.

:func:`check_experiment` checks the store, the architecture names and every run's config before
anything is submitted, and returns each run with its resolved :class:`RunConfig`, which is what
the job then trains: the config is resolved once, here. (The profile is checked against the
cluster by :func:`steelseg_hpc.compute.profiles.check_profile`.) Both raise a one-line
:class:`~steelseg_hpc.core.errors.LaunchError` or :class:`~steelseg_hpc.core.errors.ConfigError`.

Example:
    >>> runs = check_experiment(load_experiment("launch/experiments/smoke.toml"))  # doctest: +SKIP
    >>> runs[0].config.epochs  # doctest: +SKIP
    2
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from steelseg_hpc.core.errors import ConfigError, DataError, LaunchError
from steelseg_hpc.data import open_store
from steelseg_hpc.launch.config import Experiment, PlannedRun
from steelseg_hpc.models import list_models
from steelseg_hpc.training import RunConfig, load_run_config
from steelseg_hpc.training.resume import REFUSED, ResumePlan, plan_resume


@dataclass(frozen=True)
class ResolvedRun:
    """A planned job, the run config it trains (seed and store already applied) and what its run dir will do."""

    run: PlannedRun
    config: RunConfig
    resume: ResumePlan


def check_store(store: Path) -> None:
    """The store must exist and be a complete prepared store."""
    if not store.exists():
        raise LaunchError(f"store {store} does not exist (make it with: steelseg-hpc prep SPEC "
                          f"--out {store})")
    try:
        open_store(store)
    except DataError as exc:
        raise LaunchError(f"store {store} cannot be used: {exc}") from None


def check_architectures(names: list[str]) -> None:
    """Every name must be registered in the model zoo."""
    known = list_models()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"unknown architecture(s) {', '.join(map(repr, unknown))}; "
                          f"choose from: {', '.join(known)}")


def resolve_run(experiment: Experiment, run: PlannedRun) -> RunConfig:
    """The run config of one job: the experiment's run config, its overrides, then the seed."""
    # The experiment's seed comes last so it wins over any seed in the shared overrides.
    overrides = [*run.overrides, f"seed={run.seed}"]
    try:
        return load_run_config(experiment.run_config, overrides, arch=run.arch, store=run.store)
    except ConfigError as exc:
        raise ConfigError(f"{run.name}: {exc}") from None


def check_evaluation_splits(experiment: Experiment) -> None:
    """Every split the jobs evaluate must keep whole images in every store of the experiment."""
    for fold in experiment.folds or [None]:
        store = experiment.store_of(fold)
        info = open_store(store)
        missing = [split for split in experiment.evaluate if not info.whole_images.get(split)]
        if missing:
            kept = [name for name, count in info.whole_images.items() if count]
            raise ConfigError(f"evaluate {missing}: the store {store} keeps no whole images of "
                              f"{', '.join(missing)} (whole images: {', '.join(kept) or 'none'}; "
                              "see the spec's whole_image_splits)")


def resolve_and_plan(experiment: Experiment, run: PlannedRun, world_size: int | None = None) -> ResolvedRun:
    """One job's run config and the engine's own plan for its run dir; a refused plan is refused now.

    ``world_size`` is the number of ranks the job will have (the profile's nodes × tasks).
    """
    config = resolve_run(experiment, run)
    plan = plan_resume(run.run_dir, config, world_size=world_size)
    if plan.kind == REFUSED:
        raise plan.error(f"{run.name}: {plan.reason}")
    return ResolvedRun(run, config, plan)


def check_experiment(experiment: Experiment, world_size: int | None = None) -> list[ResolvedRun]:
    """Check stores, architectures, run config file, evaluated splits and every run's config.

    Args:
        experiment: The experiment to check.
        world_size: The ranks of each job (the profile's nodes × tasks); a run dir trained on
            another number is refused.

    Returns:
        Every job of the experiment with its resolved run config, in submission order.

    Raises:
        LaunchError: a missing store (of any fold). ConfigError: unknown architecture, a bad
        override, an evaluated split without whole images, or a run dir the job would refuse
        (its saved config differs). DataError: a run dir trained on another store's content or
        base checkpoint. TrainingError: a run dir whose trained epochs have no intact checkpoint,
        or that trained on another number of ranks than ``world_size``.
    """
    for fold in experiment.folds or [None]:
        check_store(experiment.store_of(fold))
    check_architectures(experiment.architectures)
    if experiment.run_config is not None and not experiment.run_config.is_file():
        raise ConfigError(f"run config {experiment.run_config} does not exist")
    check_evaluation_splits(experiment)
    return [resolve_and_plan(experiment, run, world_size) for run in experiment.runs()]
