"""What a finished trial's run directory says: its objective values and the figures a report needs.

Read through the run-directory contract only (no torch), so the driver, ``status`` and the
report agree on what a trial scored.

Example:
    >>> from steelseg_hpc.core.rundir import MetricsRow
    >>> rows = [MetricsRow(epoch=1, val_dice=0.4, epoch_seconds=60, world_size=2),
    ...         MetricsRow(epoch=2, val_dice=0.6, epoch_seconds=60, world_size=2)]
    >>> round(gpu_hours(rows), 4), best(rows, "val_dice")
    (0.0667, 0.6)
"""
from __future__ import annotations

from statistics import fmean
from typing import Any

from steelseg_hpc.core import rundir
from steelseg_hpc.core.rundir import MetricsRow


def best(rows: list[MetricsRow], metric: str) -> float | None:
    """The best (highest) value of a validation metric over the epochs."""
    return rundir.best_value(rows, metric)


def gpu_hours(rows: list[MetricsRow]) -> float:
    """Device-hours the run used: each epoch's wall time times its ranks (GPUs)."""
    return sum((row.epoch_seconds or 0.0) * (row.world_size or 1) for row in rows) / 3600.0


def trial_attributes(run_dir: str, rows: list[MetricsRow]) -> dict[str, Any]:
    """The user attributes a trial gets when it ends (what ``sweep report`` plots)."""
    info = rundir.read_run_info(run_dir)
    model = info.model if info is not None else {}
    final = rundir.read_final(run_dir)
    peaks = [row.peak_memory_mb for row in rows if row.peak_memory_mb is not None]
    seconds = [row.epoch_seconds for row in rows if row.epoch_seconds is not None]
    return {
        "trainable_params": model.get("trainable_params"),
        "total_params": model.get("total_params"),
        "peak_memory_mb": max(peaks) if peaks else None,
        "seconds_per_epoch": fmean(seconds) if seconds else None,
        "gpu_hours": gpu_hours(rows),
        "noise_scale_b_simple": [row.noise_scale_b_simple for row in rows],
        "global_batch": rows[-1].global_batch if rows else None,
        "epochs_done": len(rows),
        "stop_reason": final.stopped if final is not None else None,
    }
