"""Points of a sweep that ended failed: what the driver reports, and what ``--retry-failed`` reruns.

A *point* is one trial slot (fixed parameters and seed). It has failed when every trial it got
failed and none is left to run: its job died, and so did its retries (``retries``), or it could
not be submitted at all. A failed point is not rerun by a plain rerun of the sweep (the study
already holds its outcome); ``sweep NAME --retry-failed`` gives each one more trial.

Example:
    >>> failed_points([])
    []
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from steelseg_hpc.core.errors import SteelsegError


def failed_points(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The latest trial of every slot whose trials all failed (none complete, pruned, running or waiting)."""
    by_slot: dict[int, list[FrozenTrial]] = {}
    for trial in trials:
        if "slot" in trial.user_attrs:
            by_slot.setdefault(trial.user_attrs["slot"], []).append(trial)
    latest = [max(group, key=lambda t: t.number) for group in by_slot.values()
              if all(t.state == TrialState.FAIL for t in group)]
    return sorted(latest, key=lambda t: t.number)


def describe(trials: list[FrozenTrial], index) -> list[dict[str, Any]]:
    """What the summary says of each failed point: its trial, parameters, reason and log file."""
    described = []
    for trial in failed_points(trials):
        log = None
        job_id = trial.user_attrs.get("job_id")
        if job_id is not None:
            try:
                log = index.find_job(job_id).stderr
            except SteelsegError:
                pass  # the index was moved or reset: the reason still says what happened
        described.append({"number": trial.number, "slot": trial.user_attrs["slot"], "params": trial.params,
                          "reason": trial.user_attrs.get("fail_reason"), "log": log})
    return described


def failure_line(name: str, failed: list[dict[str, Any]], points: int) -> str:
    """One line: how many points failed, where their logs are, and how to run them again."""
    logs = sorted({str(Path(f["log"]).parent) for f in failed if f["log"]})
    first = failed[0]
    where = (f"logs in {', '.join(logs)} (trial {first['number']}: {first['log']})" if logs
             else "no job was submitted for them")
    return (f"sweep {name}: {len(failed)} of {points} point(s) failed (trials "
            f"{', '.join(str(f['number']) for f in failed)}; first: {first['reason']}); {where}; "
            f"fix the cause and run them again: steelseg-hpc sweep {name} --retry-failed")
