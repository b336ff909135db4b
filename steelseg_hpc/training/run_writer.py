"""The engine's side of the run directory: run.json, metrics, final, log.

The layout and the records are the contract in :mod:`steelseg_hpc.core.rundir`; this class adds
what needs the run config. Only rank 0 writes here (DeepSpeed's per-rank checkpoint files aside).
Whether a rerun in the same directory may resume is :func:`steelseg_hpc.training.resume.plan_resume`'s.

Example:
    >>> run = RunWriter(Path("runs/unet"))  # doctest: +SKIP
    >>> run.append_metrics(MetricsRow(epoch=1, train_loss=0.9))  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from steelseg_hpc.compute.run_lock import LOCK_NAME
from steelseg_hpc.core import rundir
from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.core.io import atomic_write_text
from steelseg_hpc.core.rundir import FinalSummary, MetricsRow, RunFiles, RunInfo
from steelseg_hpc.training.config import RunConfig, load_saved_config
from steelseg_hpc.training.host_facts import git_commit, package_versions


class RunWriter:
    """Rank-0 bookkeeping of one run directory (paths in :attr:`files`)."""

    def __init__(self, path: Path):
        self.files = RunFiles(path)
        self.path = self.files.path
        self.checkpoints = self.files.checkpoints
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--run-dir {self.path} is a file; expected a folder (new or of an earlier run)")

    def move_aside(self, label: str) -> Path:
        """Move everything but the lock into ``RUN_DIR.LABEL-TIMESTAMP`` beside it; return that."""
        aside = self.path.with_name(f"{self.path.name}.{label}-{time.strftime('%Y%m%d-%H%M%S')}")
        aside.mkdir()
        for entry in self.path.iterdir():
            if entry.name != LOCK_NAME:
                entry.rename(aside / entry.name)
        return aside

    def saved_config(self) -> RunConfig | None:
        return load_saved_config(self.files.config) if self.files.config.exists() else None

    def initialise(self, config: RunConfig, start: dict) -> None:
        """Write config.toml and add this start (host, resolved precision, ...) to run.json."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.files.config, config.to_toml())
        info = rundir.read_run_info(self.path) or RunInfo(created=time.strftime("%Y-%m-%dT%H:%M:%S"))
        info.schema_version = rundir.SCHEMA_VERSION
        info.arch = config.model.name
        info.git, info.versions = git_commit(), package_versions()
        info.starts.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **start})
        rundir.write_run_info(self.files, info)

    def update_run_info(self, **fields) -> None:
        """Set top-level fields of run.json (``store``, ``model``)."""
        info = rundir.read_run_info(self.path) or RunInfo(created=time.strftime("%Y-%m-%dT%H:%M:%S"))
        for name, value in fields.items():
            setattr(info, name, value)
        rundir.write_run_info(self.files, info)

    def read_metrics(self) -> list[MetricsRow]:
        return rundir.read_metrics(self.path)

    def truncate_metrics(self, last_epoch: int, last_step: int | None = None) -> None:
        """Drop what was written after the checkpoint resumed from: rows of epochs after
        ``last_epoch``, and validations at tiles after optimiser step ``last_step`` (a mid-epoch
        checkpoint keeps the ones of its epoch's steps before it, which the resumed run skips)."""
        def kept(row: MetricsRow) -> bool:
            if row.point == rundir.TILES_POINT and last_step is not None:
                return row.step <= last_step
            return row.epoch <= last_epoch

        rundir.write_metrics(self.files, [row for row in rundir.read_metrics(self.path, every_point=True) if kept(row)])

    def append_metrics(self, row: MetricsRow) -> None:
        rundir.append_metrics(self.files, row)

    def read_final(self) -> FinalSummary | None:
        return rundir.read_final(self.path)

    def write_final(self, summary: FinalSummary) -> None:
        rundir.write_final(self.files, summary)

    def attach_log(self) -> logging.Handler:
        """Send the package's log records to ``train.log`` until the handler is removed."""
        handler = logging.FileHandler(self.files.log, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
        package_logger = logging.getLogger("steelseg_hpc")
        package_logger.addHandler(handler)
        if package_logger.getEffectiveLevel() > logging.INFO:
            package_logger.setLevel(logging.INFO)
        return handler
