"""Optuna sweeps whose trials are jobs: ``steelseg-hpc sweep lora-rank``, ``sweep batch-lr``.

One driver process owns the study and keeps trials in flight as jobs of the launcher; see
:mod:`steelseg_hpc.sweeps.driver`. Names are imported on first use.
"""
from steelseg_hpc.core.lazy import lazy_exports

__all__ = ["DriverJob", "SearchSpace", "SweepDriver", "SweepSpec", "all_sweeps", "existing_study", "load_sweep",
           "resolve_sweep_path"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "SweepSpec": "config",
    "load_sweep": "config",
    "resolve_sweep_path": "config",
    "SearchSpace": "space",
    "SweepDriver": "driver",
    "DriverJob": "detach",
    "all_sweeps": "summary",
    "existing_study": "guards",
})
