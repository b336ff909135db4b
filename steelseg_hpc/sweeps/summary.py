"""A sweep at a glance, for ``status``: trials by state, the best one, the trials in flight.

Reads the study's storage (a journal file is safe to read while the driver appends to it) and
the run directories; nothing is written.

Example:
    >>> rows = [sweep_status(entry) for entry in ExperimentIndex().sweeps()]  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from steelseg_hpc.compute.run_lock import RunLock, is_stale
from steelseg_hpc.core import rundir
from steelseg_hpc.core.errors import SteelsegError
from steelseg_hpc.launch import ExperimentIndex
from steelseg_hpc.sweeps.study import display_url, load_existing_study, open_storage
from steelseg_hpc.sweeps.tally import tally_trials


@dataclass
class SweepStatus:
    """One sweep in ``status`` (``--json`` prints these as dicts)."""

    name: str
    storage: str
    folder: str
    trials: dict[str, int] = field(default_factory=dict)
    best_value: float | None = None
    best_params: dict[str, Any] | None = None
    best_trial: int | None = None
    running: list[dict[str, Any]] = field(default_factory=list)
    driver: str = ""
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _driver(folder: str) -> str:
    owner = RunLock(Path(folder)).read_owner()
    if owner is None:
        return "not running"
    return "not running (stale lock)" if is_stale(owner) else f"running: pid {owner.get('pid')} on {owner.get('host')}"


def sweep_status(entry: dict[str, str]) -> SweepStatus:
    """The status of one sweep recorded in the index."""
    status = SweepStatus(name=entry["name"], storage=display_url(entry["storage"]), folder=entry["folder"],
                         driver=_driver(entry["folder"]))
    try:
        study = load_existing_study(entry["name"], open_storage(entry["storage"]))
    except SteelsegError as exc:
        status.error = str(exc)
        return status
    trials = study.get_trials(deepcopy=False)
    tally = tally_trials(trials, study.directions)
    status.trials = tally.counts
    if tally.best is not None:
        top = tally.best
        status.best_value, status.best_params, status.best_trial = top.values[0], top.params, top.number
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            rows = rundir.read_metrics(trial.user_attrs.get("run_dir", "")) if trial.user_attrs.get("run_dir") else []
            status.running.append({"trial": trial.number, "job_id": trial.user_attrs.get("job_id"),
                                   "params": trial.params, "epoch": rows[-1].epoch if rows else None})
    return status


def all_sweeps(index: ExperimentIndex, name: str | None = None) -> list[SweepStatus]:
    """Every sweep of the index (or the one named), most recent first."""
    return [sweep_status(entry) for entry in index.sweeps() if name is None or entry["name"] == name]
