"""Optuna sweeps whose trials are jobs: ``steelseg-hpc sweep lora-rank``, ``sweep batch-lr``.

One driver process owns the study and keeps trials in flight as jobs of the launcher; see
:mod:`steelseg_hpc.sweeps.driver`. Names are imported on first use.
"""
from steelseg_hpc.core.lazy import lazy_exports

__all__ = ["DriverJob", "Scheduler", "SearchSpace", "StudyLocation", "SweepDriver", "SweepRecord",
           "SweepSpec", "all_sweeps", "check_no_driver", "detach_driver", "display_url", "driver_row",
           "existing_study", "failure_line", "load_existing_study", "load_sweep", "locate_study",
           "open_storage", "read_record", "record_driver_job", "resolve_sweep_path", "storage_url",
           "tally_trials"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "SweepSpec": "config",
    "load_sweep": "config",
    "resolve_sweep_path": "config",
    "SearchSpace": "space",
    "SweepDriver": "driver",
    "DriverJob": "detach",
    "check_no_driver": "detach",
    "detach_driver": "detach",
    "driver_row": "detach",
    "record_driver_job": "detach",
    "failure_line": "failures",
    "SweepRecord": "record",
    "read_record": "record",
    "Scheduler": "scheduler",
    "tally_trials": "tally",
    "locate_study": "locate",
    "StudyLocation": "locate",
    "display_url": "study",
    "load_existing_study": "study",
    "open_storage": "study",
    "storage_url": "study",
    "all_sweeps": "summary",
    "existing_study": "guards",
})
