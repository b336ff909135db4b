"""What a report is made of: the runs it compares, grouped by architecture, with their figures.

Runs come from experiments (their jobs' run directories, via the index) or from run directories
given directly. Each run is read through the run-directory contract; its test evaluation is the
whole-image sliding-window one (``evaluate``), run now where it is missing if asked, else reported
missing. Runs of one architecture (several seeds) are pooled as mean ± sd.

Example:
    >>> runs = collect_runs(["smoke"], index=ExperimentIndex())  # doctest: +SKIP
    >>> [group.arch for group in group_by_architecture(runs)]  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, median, stdev
from typing import Any

import torch

from steelseg_hpc.core import rundir
from steelseg_hpc.core.errors import ConfigError, SteelsegError, UnknownSplitError
from steelseg_hpc.core.rundir import FinalSummary, MetricsRow, RunInfo
from steelseg_hpc.launch import ExperimentIndex
from steelseg_hpc.models import architecture, architectures, build_model
from steelseg_hpc.models.profiling import forward_gflops
from steelseg_hpc.sweeps.outcome import gpu_hours
from steelseg_hpc.training import evaluate_run, load_saved_config

log = logging.getLogger(__name__)


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
    def gpu_hours(self) -> float:
        return gpu_hours(self.rows)


def experiment_run_dirs(name: str, index: ExperimentIndex) -> list[Path]:
    """The run directories of an experiment's jobs (the newest job of each)."""
    return [Path(job.run_dir) for job in index.jobs(name)]


def read_run(path: Path, split: str = "test", evaluate_missing: bool = True) -> RunRecord:
    """Read one run directory; evaluate it on ``split`` when that is missing and asked for."""
    info = rundir.read_run_info(path)
    arch, seed, options, tile = (info.arch if info else None), None, {}, None
    try:
        config = load_saved_config(rundir.RunFiles(path).config)
        arch, seed, options = config.model.name, config.seed, config.model.options()
    except SteelsegError:
        pass
    evaluation = rundir.read_evaluation(path, split) or rundir.read_evaluation(path, split, tta=True)
    note, unknown_split = "", ""
    if evaluation is None and evaluate_missing:
        try:
            evaluation = evaluate_run(path, split=split)
            note = "evaluated for this report"
        except UnknownSplitError as exc:
            note, unknown_split = f"no {split} evaluation: {exc}", str(exc)
        except SteelsegError as exc:
            note = f"no {split} evaluation: {exc}"
    elif evaluation is None:
        note = f"no {split} evaluation (run `steelseg-hpc evaluate {path} --split {split}`)"
    if info is not None and info.store:
        tile = info.store.get("tile_size")
    return RunRecord(path, arch or "?", seed, rundir.read_metrics(path), rundir.read_final(path), info,
                     evaluation, note, options, tile, unknown_split)


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
    records = [read_run(path, split, evaluate_missing) for path in dict.fromkeys(paths)]
    if records and all(record.unknown_split for record in records):
        raise ConfigError(records[0].unknown_split)  # a typo; not a report of nothing
    return records


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return fmean(values), (stdev(values) if len(values) > 1 else None)


@dataclass
class ArchitectureGroup:
    """The runs of one architecture (one per seed) and their pooled figures."""

    arch: str
    runs: list[RunRecord]

    def stat(self, getter) -> tuple[float | None, float | None]:
        return _mean_sd([getter(run) for run in self.runs])

    @property
    def family(self) -> str:
        return _registry_field(self.arch, "family", self.arch)

    @property
    def variant(self) -> str:
        return _registry_field(self.arch, "variant", "")

    @property
    def vanilla(self) -> str | None:
        return _registry_field(self.arch, "vanilla", None)

    def per_class_iou(self) -> list[tuple[float | None, float | None]]:
        lists = [(run.evaluation or {}).get("overall", {}).get("iou_per_class") or [] for run in self.runs]
        width = max((len(values) for values in lists), default=0)
        return [_mean_sd([values[i] for values in lists if i < len(values)]) for i in range(width)]

    def params(self) -> int | None:
        counts = [run.info.model.get("total_params") for run in self.runs if run.info]
        return next((c for c in counts if c), None)


def _registry_field(arch: str, name: str, default):
    try:
        return getattr(architecture(arch), name)
    except SteelsegError:
        return default


def group_by_architecture(runs: list[RunRecord]) -> list[ArchitectureGroup]:
    """Runs pooled per architecture, in the registry's order (the lab's comparison order)."""
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(run.arch, []).append(run)
    order = {arch.name: i for i, arch in enumerate(architectures())}
    return [ArchitectureGroup(arch, runs) for arch, runs in sorted(groups.items(), key=lambda kv: order.get(kv[0], 99))]


def gflops_per_tile(arch: str, options: dict[str, Any], tile: int, num_classes: int) -> float | None:
    """Forward GFLOPs of one tile, counted on the meta device (no memory, no compute)."""
    options = {k: v for k, v in options.items() if k != _registry_field(arch, "base_option", None)}
    try:
        with torch.device("meta"):
            return forward_gflops(build_model(arch, in_channels=1, num_classes=num_classes, **options), tile)
    except Exception as exc:  # noqa: BLE001 - a model that cannot run on meta has no figure, not a failure
        log.info("no GFLOPs for %s: %s", arch, exc)
        return None
