"""What a report is made of: the runs it compares, read from their run directories.

Runs come from experiments (their jobs' run directories, via the index) or from run directories
given directly. Each run is read through the run-directory contract; its test evaluation is the
whole-image sliding-window one (``evaluate``), run now where it is missing if asked, else reported
missing. A file the report reads that is there but damaged is recorded in ``RunRecord.damage``:
the figures that come from it are unknown, never zero (``report.groups`` pools the runs).

Example:
    >>> runs = collect_runs(["smoke"], index=ExperimentIndex())  # doctest: +SKIP
    >>> [run.damage for run in runs]  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, median
from typing import Any

import torch

from steelseg_hpc.core import rundir
from steelseg_hpc.core.errors import ConfigError, SteelsegError, UnknownSplitError
from steelseg_hpc.core.rundir import FinalSummary, MetricsRow, RunInfo
from steelseg_hpc.inference import evaluate_run
from steelseg_hpc.launch import ExperimentIndex
from steelseg_hpc.models import architecture, build_model
from steelseg_hpc.models.profiling import forward_gflops
from steelseg_hpc.report.pooling import experiment_fields
from steelseg_hpc.sweeps.outcome import Cost, run_cost
from steelseg_hpc.training import load_saved_config

log = logging.getLogger(__name__)

#: What is unknown of a run when one of the files it is read from is damaged, by part.
UNKNOWN_WHEN_DAMAGED = {
    "config": "its seed, options and GFLOPs are",
    "run_info": "its store, parameter count and GFLOPs are",
    "metrics": "its epochs, time per epoch, cost and peak memory are",
    "final": "how it stopped is",
    "evaluation": "its test figures are",
}


@dataclass
class RunRecord:
    """One run directory and everything the report shows of it."""

    path: Path
    arch: str
    seed: int | None
    rows: list[MetricsRow]
    final: FinalSummary | None
    info: RunInfo | None
    evaluation: dict[str, Any] | None
    evaluation_note: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    tile_size: int | None = None
    unknown_split: str = ""  # why the run's store has no such split (a typo in --split?), else ""
    #: The parts read from a damaged file (a key of UNKNOWN_WHEN_DAMAGED) -> (its name, why).
    damage: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: What makes it an experiment (``report.pooling.experiment_fields``): runs pool when equal.
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    def test(self, key: str) -> float | None:
        overall = (self.evaluation or {}).get("overall") or {}
        value = overall.get(key)
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def minutes_per_epoch(self) -> float | None:
        seconds = [row.epoch_seconds for row in self.rows if row.epoch_seconds is not None]
        return fmean(seconds) / 60 if seconds else None

    @property
    def seconds_per_tile(self) -> float | None:
        """Training seconds per tile (median over epochs): a cost that does not depend on tile counts."""
        rates = sorted(row.tiles_per_s for row in self.rows if row.tiles_per_s)
        return 1.0 / median(rates) if rates else None

    @property
    def span(self) -> tuple[float, float] | None:
        """When the run trained: its first start to its last metrics line (epoch seconds)."""
        if self.info is None or not self.info.starts or not self.info.starts[0].get("time"):
            return None
        try:
            began = time.mktime(time.strptime(self.info.starts[0]["time"], "%Y-%m-%dT%H:%M:%S"))
            ended = rundir.RunFiles(self.path).metrics.stat().st_mtime
        except (ValueError, OSError):
            return None
        return began, ended

    @property
    def peak_memory_mb(self) -> float | None:
        peaks = [row.peak_memory_mb for row in self.rows if row.peak_memory_mb is not None]
        return max(peaks) if peaks else None

    @property
    def cost(self) -> Cost:
        """GPU-hours on GPUs, CPU core-hours on CPUs (from the host its last start recorded)."""
        host = self.info.last_start.get("host") if self.info is not None else None
        return run_cost(self.rows, host if isinstance(host, dict) else None)

    def damage_notes(self, split: str) -> list[str]:
        """One line per damaged file: which, why, and what of the run is therefore unknown."""
        notes = []
        for part, (_, why) in self.damage.items():
            line = f"{why}; {UNKNOWN_WHEN_DAMAGED[part]} unknown (shown as ?), and it is pooled with no other run"
            if part == "evaluation":
                line += f"; `steelseg-hpc evaluate {self.path} --split {split}` measures it again"
            notes.append(line)
        return notes


def experiment_run_dirs(name: str, index: ExperimentIndex) -> list[Path]:
    """The run directories of an experiment's jobs (the newest job of each)."""
    return [Path(job.run_dir) for job in index.jobs(name)]


def read_run(path: Path, split: str = "test", evaluate_missing: bool = True) -> RunRecord:
    """Read one run directory; evaluate it on ``split`` when that is missing and asked for.

    A damaged file is recorded in ``damage`` and read as missing; a damaged evaluation is not
    replaced by a new one behind the user's back (the note says how to measure it again).
    """
    files = rundir.RunFiles(path)
    damage: dict[str, tuple[str, str]] = {}

    def read(part: str, file: Path, reader, default):
        try:
            return reader()
        except rundir.DamagedRunFile as exc:
            why = str(exc)
        except SteelsegError as exc:  # config.toml: its reader names the file and what is wrong
            why = f"{exc} (damaged, or written by another version)"
        damage[part] = (file.relative_to(path).as_posix(), why)
        return default

    info = read("run_info", files.run_info, lambda: rundir.read_run_info(path, strict=True), None)
    config = read("config", files.config, lambda: load_saved_config(files.config), None)
    rows = read("metrics", files.metrics, lambda: rundir.read_metrics(path, strict=True), [])
    final = read("final", files.final, lambda: rundir.read_final(path, strict=True), None)
    evaluation = None
    for tta in (False, True):
        if evaluation is None and "evaluation" not in damage:
            evaluation = read("evaluation", files.eval_metrics(split, tta),
                              lambda: rundir.read_evaluation(path, split, tta=tta, strict=True), None)
    note, unknown_split = "", ""  # a damaged evaluation is said by damage_notes
    if evaluation is None and "evaluation" not in damage and evaluate_missing:
        try:
            evaluation = evaluate_run(path, split=split)
            note = "evaluated for this report"
        except UnknownSplitError as exc:
            note, unknown_split = f"no {split} evaluation: {exc}", str(exc)
        except SteelsegError as exc:
            note = f"no {split} evaluation: {exc}"
    elif evaluation is None and "evaluation" not in damage:
        note = f"no {split} evaluation (run `steelseg-hpc evaluate {path} --split {split}`)"
    arch = config.model.name if config else (info.arch if info and isinstance(info.arch, str) else None)
    tile = info.store.get("tile_size") if info is not None and info.store else None
    fields = experiment_fields(config.model_dump(mode="json") if config else None, info, evaluation,
                               damaged=[name for name, _ in damage.values()])
    return RunRecord(path, arch or "?", config.seed if config else None, rows, final, info, evaluation, note,
                     config.model.options() if config else {}, tile, unknown_split, damage, fields)


def collect_runs(targets: list[str], index: ExperimentIndex, split: str = "test",
                 evaluate_missing: bool = True, sweeps: set[str] = frozenset(),
                 notes: list[str] | None = None) -> list[RunRecord]:
    """Every run named by ``targets`` (experiment names or run directories), sweeps left out.

    An experiment's run directories that no longer exist are left out, with a line in ``notes``
    (logged when ``notes`` is None); when none is left, or ``split`` is in no run's store, that is
    an error rather than an empty report.
    """
    paths: list[Path] = []
    for target in targets:
        if target in sweeps:
            continue
        candidate = Path(target)
        if candidate.is_dir() and rundir.RunFiles(candidate).config.exists():
            paths.append(candidate)
        elif candidate.is_dir():
            paths += sorted(p for p in candidate.iterdir() if rundir.RunFiles(p).config.exists())
        elif index.is_experiment(target):
            recorded = experiment_run_dirs(target, index)
            present = [path for path in recorded if rundir.RunFiles(path).config.exists()]
            gone = [str(path) for path in recorded if path not in present]
            if recorded and not present:
                raise ConfigError(f"experiment {target!r}: none of its {len(recorded)} run directories exists any "
                                  f"more (moved or deleted?), e.g. {gone[0]}")
            if gone:
                line = (f"experiment {target!r}: {len(gone)} run director{'y is' if len(gone) == 1 else 'ies are'} "
                        f"gone, left out: {', '.join(gone)}")
                if notes is None:
                    log.warning(line)
                else:
                    notes.append(line)
            paths += present
        else:
            raise ConfigError(f"{target!r} is neither a run directory nor an experiment or sweep of the index "
                              f"{index.path}")
    unique: dict[Path, Path] = {}
    for path in paths:  # a folder named twice (by another path, or by a link) is one run
        unique.setdefault(path.resolve(), path)
    records = [read_run(path, split, evaluate_missing) for path in unique.values()]
    if records and all(record.unknown_split for record in records):
        raise ConfigError(records[0].unknown_split)  # a typo; not a report of nothing
    return records


def registry_field(arch: str, name: str, default):
    """A field of the architecture's registry entry, or ``default`` for a name it does not know."""
    try:
        return getattr(architecture(arch), name)
    except SteelsegError:
        return default


def gflops_per_tile(arch: str, options: dict[str, Any], tile: int, num_classes: int) -> float | None:
    """Forward GFLOPs of one tile, counted on the meta device (no memory, no compute)."""
    options = {k: v for k, v in options.items() if k != registry_field(arch, "base_option", None)}
    try:
        with torch.device("meta"):
            return forward_gflops(build_model(arch, in_channels=1, num_classes=num_classes, **options), tile)
    except Exception as exc:  # noqa: BLE001 - a model that cannot run on meta has no figure, not a failure
        log.info("no GFLOPs for %s: %s", arch, exc)
        return None
