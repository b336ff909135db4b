"""Experiments (what a launch trains): architectures × seeds on one store with one run config.

An experiment (``launch/experiments/*.toml``; a name finds the project's, else the shipped copy, see
:mod:`steelseg_hpc.core.shipped`) becomes one training job per (architecture, seed);
where the jobs run is a cluster profile (:mod:`steelseg_hpc.compute.profiles`). With ``folds``,
it is one job per (fold, architecture, seed), each on its fold's store: ``store`` then names
the stores by a pattern with ``{fold}`` (a cross-validation prepares one store per fold).

Example:
    >>> exp = Experiment(name="smoke", architectures=["unet3plus"], seeds=[0, 1], store="s.zarr")
    >>> [run.name for run in exp.runs()]
    ['unet3plus-s0', 'unet3plus-s1']
    >>> cv = Experiment(name="cv", architectures=["elunet"], folds=[0, 1], store="md-fold{fold}.zarr")
    >>> [(run.name, str(run.store)) for run in cv.runs()]
    [('elunet-f0-s0', 'md-fold0.zarr'), ('elunet-f1-s0', 'md-fold1.zarr')]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from steelseg_hpc.core.config import StrictModel, load_toml
from steelseg_hpc.core.shipped import NamedFile, find_named_or_path
from steelseg_hpc.models import architectures

#: The lab's comparison: every registered architecture (the six CNNs and SAM with LoRA).
DEFAULT_ARCHITECTURES = tuple(arch.name for arch in architectures())


#: What ``store`` holds where an experiment has ``folds``: replaced by each fold's number.
FOLD_FIELD = "{fold}"


@dataclass(frozen=True)
class PlannedRun:
    """One job of an experiment: an architecture, a seed, its store and the run directory it writes."""

    arch: str
    seed: int
    run_dir: Path
    overrides: tuple[str, ...]
    store: Path
    fold: int | None = None

    @property
    def name(self) -> str:
        return self.run_dir.name


class Experiment(StrictModel):
    """Architectures × seeds trained on one store with one run config.

    Attributes:
        name: names the experiment in the index and its folder under ``runs_root``.
        run_config: a run config TOML (``None``: the engine's defaults).
        overrides: ``KEY=VALUE`` run-config overrides for every run (``epochs=2``).
        arch_overrides: further overrides for one architecture (``{"sam-lora" = ["rank=4"]}``).
        runs_root: run directories go to ``runs_root/name/ARCH-sSEED`` (``ARCH-fFOLD-sSEED``
            with folds).
        folds: one set of runs per fold, on the store ``store`` names with ``{fold}`` replaced
            by the fold (empty: one store, no folds).
        evaluate: splits each job evaluates on whole images once training has stopped
            (``evaluate_run`` with the run config's ``eval.*``, so ``eval.tta=true`` adds flips).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    architectures: list[str] = Field(default_factory=lambda: list(DEFAULT_ARCHITECTURES), min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    store: Path
    run_config: Path | None = None
    overrides: list[str] = []
    arch_overrides: dict[str, list[str]] = {}
    runs_root: Path = Path("runs")
    folds: list[int] = []
    evaluate: list[str] = []

    @field_validator("architectures", "seeds", "folds", "evaluate")
    @classmethod
    def _no_duplicates(cls, values: list) -> list:
        if len(set(values)) != len(values):
            raise ValueError(f"duplicates in {values}")
        return values

    @model_validator(mode="after")
    def _folds_name_their_stores(self) -> "Experiment":
        patterned = FOLD_FIELD in str(self.store)
        if self.folds and not patterned:
            raise ValueError(f"folds {self.folds} need a store pattern with {FOLD_FIELD} "
                             f"(e.g. stores/metaldam-fold{FOLD_FIELD}.zarr), got {self.store}")
        if patterned and not self.folds:
            raise ValueError(f"store {self.store} has {FOLD_FIELD} but the experiment has no folds")
        return self

    @model_validator(mode="after")
    def _overrides_name_known_archs(self) -> "Experiment":
        unknown = sorted(set(self.arch_overrides) - set(self.architectures))
        if unknown:
            raise ValueError(f"arch_overrides for {unknown}, which are not in architectures")
        return self

    def folder(self) -> Path:
        """The experiment's folder: run directories and submitit's job files live here."""
        return (self.runs_root / self.name).absolute()

    def store_of(self, fold: int | None) -> Path:
        """The store of ``fold`` (``store`` itself without folds)."""
        if fold is None:
            return self.store
        return Path(str(self.store).replace(FOLD_FIELD, str(fold)))

    def runs(self) -> list[PlannedRun]:
        """Every (fold, architecture, seed) job in submission order."""
        return [
            PlannedRun(
                arch=arch,
                seed=seed,
                run_dir=self.folder() / (f"{arch}-s{seed}" if fold is None else f"{arch}-f{fold}-s{seed}"),
                overrides=tuple(self.overrides) + tuple(self.arch_overrides.get(arch, ())),
                store=self.store_of(fold),
                fold=fold,
            )
            for fold in (self.folds or [None])
            for arch in self.architectures
            for seed in self.seeds
        ]


def find_experiment(name_or_path: str | Path, start: Path | None = None) -> NamedFile:
    """The experiment given by path or by name (``smoke``), and where it was found.

    Raises:
        ConfigError: a name that is no known experiment (the message lists the known ones).
    """
    return find_named_or_path("experiment", name_or_path, start)


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    """Load an experiment TOML (a path or a name); relative paths in it are relative to the current directory.

    Example:
        >>> load_experiment("launch/experiments/smoke.toml", ["store=x.zarr"]).name  # doctest: +SKIP
        'smoke'
        >>> load_experiment("smoke", ["store=x.zarr"]).name  # doctest: +SKIP
        'smoke'
    """
    return load_toml(find_experiment(path).path, Experiment, overrides)
