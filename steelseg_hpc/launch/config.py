"""Experiments (what a launch trains): architectures × seeds on one store with one run config.

An experiment (``launch/experiments/*.toml``) becomes one training job per (architecture, seed);
where the jobs run is a cluster profile (:mod:`steelseg_hpc.compute.profiles`).

Example:
    >>> exp = Experiment(name="smoke", architectures=["unet3plus"], seeds=[0, 1], store="s.zarr")
    >>> [run.name for run in exp.runs()]
    ['unet3plus-s0', 'unet3plus-s1']
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from steelseg_hpc.core.config import StrictModel, load_toml
from steelseg_hpc.models import architectures

#: The lab's comparison: every registered architecture (the six CNNs and SAM with LoRA).
DEFAULT_ARCHITECTURES = tuple(arch.name for arch in architectures())


@dataclass(frozen=True)
class PlannedRun:
    """One job of an experiment: an architecture, a seed and the run directory it writes."""

    arch: str
    seed: int
    run_dir: Path
    overrides: tuple[str, ...]

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
        runs_root: run directories go to ``runs_root/name/ARCH-sSEED``.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    architectures: list[str] = Field(default_factory=lambda: list(DEFAULT_ARCHITECTURES), min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    store: Path
    run_config: Path | None = None
    overrides: list[str] = []
    arch_overrides: dict[str, list[str]] = {}
    runs_root: Path = Path("runs")

    @field_validator("architectures", "seeds")
    @classmethod
    def _no_duplicates(cls, values: list) -> list:
        if len(set(values)) != len(values):
            raise ValueError(f"duplicates in {values}")
        return values

    @model_validator(mode="after")
    def _overrides_name_known_archs(self) -> "Experiment":
        unknown = sorted(set(self.arch_overrides) - set(self.architectures))
        if unknown:
            raise ValueError(f"arch_overrides for {unknown}, which are not in architectures")
        return self

    def folder(self) -> Path:
        """The experiment's folder: run directories and submitit's job files live here."""
        return (self.runs_root / self.name).absolute()

    def runs(self) -> list[PlannedRun]:
        """Every (architecture, seed) job in submission order."""
        return [
            PlannedRun(
                arch=arch,
                seed=seed,
                run_dir=self.folder() / f"{arch}-s{seed}",
                overrides=tuple(self.overrides) + tuple(self.arch_overrides.get(arch, ())),
            )
            for arch in self.architectures
            for seed in self.seeds
        ]


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    """Load an experiment TOML; relative paths in it are relative to the current directory.

    Example:
        >>> load_experiment("launch/experiments/smoke.toml", ["store=x.zarr"]).name  # doctest: +SKIP
        'smoke'
    """
    return load_toml(path, Experiment, overrides)
