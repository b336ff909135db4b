"""Trials by state and the best trial: one count for the driver, ``status`` and ``sweep report``.

Example:
    >>> import optuna
    >>> study = optuna.create_study(direction="maximize")
    >>> study.optimize(lambda t: t.suggest_int("x", 0, 3), n_trials=3)
    >>> tally = tally_trials(study.get_trials(deepcopy=False), study.directions)
    >>> sum(tally.counts.values()), tally.best.value == max(t.value for t in study.trials)
    (3, True)
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


@dataclass(frozen=True)
class TrialTally:
    """How many trials are in each state (``{"COMPLETE": 3, "FAIL": 1}``) and the best complete
    one (None with no complete trial, or with several objectives, where no single trial is best)."""

    counts: dict[str, int]
    best: FrozenTrial | None


def tally_trials(trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection]) -> TrialTally:
    """Count ``trials`` by state and pick the best on the study's (single) direction."""
    counts = dict(Counter(trial.state.name for trial in trials))
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    best = None
    if complete and len(directions) == 1:
        pick = max if directions[0] == StudyDirection.MAXIMIZE else min
        best = pick(complete, key=lambda trial: trial.values[0])
    return TrialTally(counts, best)
