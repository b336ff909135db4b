"""Cluster profiles (where and how jobs run) and experiments (what they train), both TOML.

A profile (``launch/*.toml``) holds generic resource names (``gpus_per_node``, ``time_min``,
``mem_gb``) that mean the same for the local and the SLURM executor, plus ``slurm_extra`` for any
other ``sbatch`` option. An experiment (``launch/experiments/*.toml``) is architectures × seeds on
one store with one run config; each pair becomes one training job.

Example:
    >>> profile = ClusterProfile(executor="slurm", partition="gpu", gpus_per_node=2)
    >>> profile.tasks()
    2
    >>> exp = Experiment(name="smoke", architectures=["unet3plus"], seeds=[0, 1], store="s.zarr")
    >>> [run.name for run in exp.runs()]
    ['unet3plus-s0', 'unet3plus-s1']
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from steelseg_hpc.config import StrictModel, load_toml

#: The lab's comparison: the six CNNs of the model zoo and SAM with LoRA.
DEFAULT_ARCHITECTURES = (
    "unet3plus",
    "unet3plus-enhanced",
    "unet3plus-enhanced-glu",
    "elunet",
    "elunet-enhanced",
    "elunet-enhanced-glu",
    "sam-lora",
)


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


def load_profile(path: str | Path, overrides: list[str] | None = None) -> ClusterProfile:
    """Load a cluster profile TOML (``--set`` style overrides allowed).

    Example:
        >>> load_profile("launch/local-cluster.toml").partition  # doctest: +SKIP
        'gpu'
    """
    return load_toml(path, ClusterProfile, overrides)


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    """Load an experiment TOML; relative paths in it are relative to the current directory.

    Example:
        >>> load_experiment("launch/experiments/smoke.toml", ["store=x.zarr"]).name  # doctest: +SKIP
        'smoke'
    """
    return load_toml(path, Experiment, overrides)
