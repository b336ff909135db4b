"""Sweep definitions (``sweeps/*.toml``): a base run, a search space, an objective, sampler and pruner.

A sweep is data (nnU-Net's "plans as data"): which store and base run config every trial starts
from, which run-config keys vary and over which values or ranges, what is optimised, how trials are
chosen and stopped early, how many run at once and where. ``steelseg-hpc sweep NAME`` finds
``sweeps/NAME.toml`` in the current folder or the nearest parent that has a ``sweeps/`` folder, else
the copy shipped with the package (:mod:`steelseg_hpc.core.shipped`).

Example:
    >>> spec = SweepSpec.model_validate({"name": "r", "store": "s.zarr", "base": {"arch": "sam-lora"},
    ...     "space": {"rank": {"key": "model.rank", "values": [0, 4]}}})
    >>> spec.sampler.kind, spec.objective.metric, spec.seeds
    ('grid', 'val_dice', [0])
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from steelseg_hpc.core.config import StrictModel, load_toml
from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.core.rundir import VALIDATION_METRICS
from steelseg_hpc.core.shipped import NamedFile, find_named, known_names

SWEEP_FOLDER = "sweeps"
#: The derived parameter a batch-size sweep varies: micro-batch x accumulation x ranks.
GLOBAL_BATCH = "global_batch"


class ParameterSpec(StrictModel):
    """One dimension of the search space, bound to a dotted run-config key.

    Give ``values`` (a categorical choice: enumerated by the grid sampler, drawn by the others) or
    ``low``/``high`` (a range, ``log`` for log-uniform; ``integer`` for whole numbers).
    ``stratify = true`` enumerates the values under any sampler, so every value gets trials of
    its own (a fair batch-size comparison tunes the learning rate per batch size).
    """

    key: str = Field(min_length=1)
    values: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    stratify: bool = False

    @model_validator(mode="after")
    def _values_or_range(self) -> "ParameterSpec":
        if self.values is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either values or low/high, not both")
            if not self.values:
                raise ValueError("values is empty")
            if len({repr(v) for v in self.values}) != len(self.values):
                raise ValueError(f"values has duplicates: {self.values}")
            return self
        if self.low is None or self.high is None:
            raise ValueError("needs values, or both low and high")
        if self.low >= self.high:
            raise ValueError(f"range [{self.low}, {self.high}] is empty or inverted; need low < high")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        if self.stratify:
            raise ValueError("stratify needs values to enumerate")
        return self

    @property
    def is_range(self) -> bool:
        return self.values is None


class BaseRun(StrictModel):
    """The run every trial starts from (the space's values are applied on top)."""

    arch: str = Field(min_length=1)
    run_config: Path | None = None
    overrides: list[str] = []


class ObjectiveSpec(StrictModel):
    """What a trial scores: the best validation ``metric`` over its epochs (maximised), and
    optionally its cost (minimised) as a second objective: then the sweep has a Pareto front. The
    cost is GPU-hours for trials on GPUs and CPU core-hours for trials on CPUs (the key keeps its
    name)."""

    metric: Literal[VALIDATION_METRICS] = "val_dice"  # type: ignore[valid-type]
    gpu_hours: bool = False


class SamplerSpec(StrictModel):
    kind: Literal["grid", "tpe", "random"] = "grid"
    seed: int = 0


class PrunerSpec(StrictModel):
    """Early stopping of unpromising trials (the job is asked to stop at its next step)."""

    kind: Literal["median", "hyperband", "none"] = "median"
    startup_trials: int = Field(3, ge=0, description="trials that finish before any is pruned")
    warmup_epochs: int = Field(1, ge=0, description="epochs of a trial before it may be pruned")


class SweepSpec(StrictModel):
    """A whole sweep (one TOML file in ``sweeps/``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    store: Path
    base: BaseRun
    space: dict[str, ParameterSpec] = Field(min_length=1)
    objective: ObjectiveSpec = ObjectiveSpec()
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    trials: int | None = Field(None, ge=1, description="trials to run; default: every grid point once per seed")
    parallel: int = Field(2, ge=1, description="trials in flight at once")
    profile: str = "local"
    runs_root: Path = Path("runs")
    max_micro_batch: int = Field(8, ge=1, description="largest micro-batch per rank that fits the GPU")
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    lr_reference_batch: int = Field(8, ge=1)
    retries: int = Field(1, ge=0, description="how often a trial whose job died is run again")

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"duplicates in {seeds}")
        return seeds

    @model_validator(mode="after")
    def _consistent(self) -> "SweepSpec":
        if self.sampler.kind == "grid":
            ranged = [name for name, p in self.space.items() if p.is_range]
            if ranged:
                raise ValueError(f"the grid sampler needs values for every parameter; {ranged} have ranges "
                                 "(use sampler.kind = \"tpe\" or \"random\")")
        if "seed" in {p.key for p in self.space.values()}:
            raise ValueError("seed is not a search-space key: list the seeds in `seeds`")
        keys = [p.key for p in self.space.values()]
        if len(set(keys)) != len(keys):
            raise ValueError(f"two parameters set the same key: {keys}")
        if self.lr_scaling != "none" and not any(p.key == GLOBAL_BATCH for p in self.space.values()):
            raise ValueError("lr_scaling needs a global_batch parameter")
        return self

    def folder(self) -> Path:
        """The sweep's folder: study journal, one run directory per trial, job files."""
        return (self.runs_root / self.name).absolute()


def resolve_sweep_path(name_or_path: str | Path, start: Path | None = None) -> Path:
    """The TOML of a sweep given by path or by name (``lora-rank`` finds ``sweeps/lora-rank.toml``).

    Raises:
        ConfigError: neither a file nor a known sweep name (the message lists the known ones).
    """
    return find_sweep(name_or_path, start).path


def find_sweep(name_or_path: str | Path, start: Path | None = None) -> NamedFile:
    """The sweep given by path or by name, and where it was found (``describe()`` says).

    Raises:
        ConfigError: neither a file nor a known sweep name (the message lists the known ones).
    """
    found = find_named("sweep", name_or_path, start)
    if found is not None:
        return found
    known = known_names("sweep", start)
    hint = f"; known sweeps: {', '.join(known)}" if known else f"; no {SWEEP_FOLDER}/ folder here or above"
    raise ConfigError(f"unknown sweep {str(name_or_path)!r}: no such file or sweeps/{name_or_path}.toml{hint}")


def load_sweep(name_or_path: str | Path) -> SweepSpec:
    """Load and validate a sweep TOML by name or path (the space is checked by :mod:`.space`).

    Example:
        >>> load_sweep("lora-rank").space["rank"].key  # doctest: +SKIP
        'model.rank'
    """
    return load_toml(resolve_sweep_path(name_or_path), SweepSpec)
