"""The training engine: DeepSpeed runs on the Zarr store, resumable, with whole-image evaluation.

Names are imported on first use (torch and DeepSpeed load only when needed).

Example:
    >>> from steelseg_hpc.training import RunConfig, load_run_config
    >>> load_run_config(None, ["zero_stage=1"]).zero_stage
    1
"""
from steelseg_hpc.core.lazy import lazy_exports

__all__ = [
    "RunConfig",
    "StopRequest",
    "TrainingPreempted",
    "evaluate_run",
    "export_run",
    "load_exported",
    "load_run_config",
    "load_saved_config",
    "train",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "train": "api",
    "RunConfig": "config",
    "load_run_config": "config",
    "load_saved_config": "config",
    "evaluate_run": "evaluate",
    "export_run": "export",
    "load_exported": "export",
    "StopRequest": "preemption",
    "TrainingPreempted": "preemption",
})
