"""The training engine: DeepSpeed runs on the Zarr store, resumable.

What is done with a trained run (whole-image evaluation, export) is :mod:`steelseg_hpc.inference`.

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
    "TrainerHooks",
    "TrainingPreempted",
    "load_run_config",
    "load_saved_config",
    "train",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "train": "api",
    "RunConfig": "config",
    "load_run_config": "config",
    "load_saved_config": "config",
    "StopRequest": "preemption",
    "TrainingPreempted": "preemption",
    "TrainerHooks": "trainer",
})
