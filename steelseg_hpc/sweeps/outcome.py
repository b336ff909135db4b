"""What a finished trial's run directory says: its objective values and the figures a report needs.

Read through the run-directory contract only (no torch), so the driver, ``status`` and the
report agree on what a trial scored.

The cost of a run names its device: GPU-hours for a run on GPUs (wall time x ranks, one GPU per
rank), CPU core-hours for a run on CPUs (wall time x ranks x each rank's compute threads), as its
``run.json`` recorded them.

Example:
    >>> from steelseg_hpc.core.rundir import MetricsRow
    >>> rows = [MetricsRow(epoch=1, val_dice=0.4, epoch_seconds=60, world_size=2),
    ...         MetricsRow(epoch=2, val_dice=0.6, epoch_seconds=60, world_size=2)]
    >>> round(rank_hours(rows), 4), best(rows, "val_dice")
    (0.0667, 0.6)
    >>> cost = run_cost(rows, {"gpus": [], "cpu_threads": 4})
    >>> round(cost.value, 3), cost.unit
    (0.267, 'CPU core-hours')
"""
from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean
from typing import Any

from steelseg_hpc.core import rundir
from steelseg_hpc.core.rundir import MetricsRow


def best(rows: list[MetricsRow], metric: str) -> float | None:
    """The best (highest) value of a validation metric over the epochs."""
    return rundir.best_value(rows, metric)


GPU_HOURS, CPU_CORE_HOURS, RANK_HOURS = "GPU-hours", "CPU core-hours", "rank-hours"


@dataclass(frozen=True)
class Cost:
    """What a run cost, in the unit of the device it trained on."""

    value: float
    unit: str  # GPU_HOURS, CPU_CORE_HOURS, or RANK_HOURS where the run did not record its device


def rank_hours(rows: list[MetricsRow]) -> float:
    """Each epoch's wall time times its ranks, in hours (one device per rank)."""
    return sum((row.epoch_seconds or 0.0) * (row.world_size or 1) for row in rows) / 3600.0


def host_of(run_dir: str) -> dict[str, Any] | None:
    """The host facts of a run's last start (``run.json``), or None when it has none."""
    info = rundir.read_run_info(run_dir)
    host = info.last_start.get("host") if info is not None else None
    return host if isinstance(host, dict) else None


def run_cost(rows: list[MetricsRow], host: dict[str, Any] | None) -> Cost:
    """GPU-hours for a run on GPUs, CPU core-hours for a run on CPUs (see the module docstring).

    A CPU run that did not record its threads per rank (older runs) is counted with the host's
    cores shared evenly among its ranks.
    """
    hours = rank_hours(rows)
    if host is None:
        return Cost(hours, RANK_HOURS)
    if host.get("gpus"):
        return Cost(hours, GPU_HOURS)
    threads = host.get("cpu_threads") or max(1, int(host.get("cpu_count") or 1) // max(1, int(host.get("world_size") or 1)))
    return Cost(hours * threads, CPU_CORE_HOURS)


def cost_header(units: list[str]) -> str:
    """The column title for costs in ``units``: the unit when they share one, else "cost".

    Example:
        >>> cost_header(["CPU core-hours", "CPU core-hours"]), cost_header(["GPU-hours", "CPU core-hours"])
        ('CPU core-hours', 'cost')
    """
    return units[0] if units and len(set(units)) == 1 else "cost"


def trial_attributes(run_dir: str, rows: list[MetricsRow]) -> dict[str, Any]:
    """The user attributes a trial gets when it ends (what ``sweep report`` plots)."""
    info = rundir.read_run_info(run_dir)
    model = info.model if info is not None else {}
    final = rundir.read_final(run_dir)
    peaks = [row.peak_memory_mb for row in rows if row.peak_memory_mb is not None]
    seconds = [row.epoch_seconds for row in rows if row.epoch_seconds is not None]
    cost = run_cost(rows, host_of(run_dir))
    return {
        "trainable_params": model.get("trainable_params"),
        "total_params": model.get("total_params"),
        "peak_memory_mb": max(peaks) if peaks else None,
        "seconds_per_epoch": fmean(seconds) if seconds else None,
        "cost": cost.value,
        "cost_unit": cost.unit,
        "noise_scale_b_simple": [row.noise_scale_b_simple for row in rows],
        "global_batch": rows[-1].global_batch if rows else None,
        "epochs_done": len(rows),
        "stop_reason": final.stopped if final is not None else None,
    }
