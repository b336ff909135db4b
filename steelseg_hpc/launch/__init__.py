"""Launch training on SLURM (or locally) with submitit; index, watch and cancel the jobs.

``launch_experiment`` validates and submits an experiment; ``collect_status`` joins SLURM's view
with each run directory; a ``JobHandle`` (see :mod:`.handle`) says whether one job has ended, waits
for it and cancels it; ``cancel`` and ``job_logs`` act on the jobs from any shell. Names are
imported on first use, so ``status`` never loads the training engine.
"""
from steelseg_hpc.core.lazy import lazy_exports

__all__ = [
    "DEFAULT_ARCHITECTURES",
    "Executor",
    "Experiment",
    "ExperimentIndex",
    "JobHandle",
    "JobRow",
    "JobStatus",
    "TrainingJob",
    "CancelOutcome",
    "cancel",
    "check_experiment",
    "collect_status",
    "job_logs",
    "job_states",
    "launch_experiment",
    "plan_launch",
    "load_experiment",
    "find_experiment",
    "handles_of",
    "has_ended",
    "parse_signal",
    "submit_experiment",
    "submit_indexed",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "DEFAULT_ARCHITECTURES": "config",
    "Experiment": "config",
    "load_experiment": "config",
    "find_experiment": "config",
    "CancelOutcome": "handle",
    "cancel": "control",
    "job_logs": "control",
    "parse_signal": "control",
    "Executor": "executor",
    "JobHandle": "handle",
    "handles_of": "handle",
    "has_ended": "handle",
    "submit_indexed": "handle",
    "ExperimentIndex": "index",
    "JobRow": "index",
    "TrainingJob": "job",
    "JobStatus": "status",
    "collect_status": "status",
    "job_states": "status",
    "check_experiment": "validate",
    "launch_experiment": "submit",
    "plan_launch": "submit",
    "submit_experiment": "submit",
})
