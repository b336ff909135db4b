"""The training engine: DeepSpeed runs on the Zarr store, resumable, with whole-image evaluation.

Example:
    >>> from steelseg_hpc.training import RunConfig, load_run_config
    >>> load_run_config(None, ["zero_stage=1"]).zero_stage
    1
"""
from steelseg_hpc.training.api import evaluate_run as evaluate_run
from steelseg_hpc.training.api import train as train
from steelseg_hpc.training.config import RunConfig as RunConfig
from steelseg_hpc.training.config import load_run_config as load_run_config
from steelseg_hpc.training.config import load_saved_config as load_saved_config

__all__ = ["RunConfig", "evaluate_run", "load_run_config", "load_saved_config", "train"]
