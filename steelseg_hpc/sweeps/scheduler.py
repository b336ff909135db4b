"""The sweep's decisions, apart from its I/O: which slot runs next, with which fixed values, and
what is retried.

A sweep has *slots* (:meth:`~steelseg_hpc.sweeps.space.SearchSpace.slots`): each point of the
enumerated parameters with each seed, in launch order. A slot's trial is queued with the slot's
fixed values; a later seed of a point also takes the values its first seed drew (its *sibling*),
so every seed of a point trains the same parameters. A failed trial is run again while its slot
has failed at most ``retries`` times. The :class:`Scheduler` reads only the trials it is given
(their state, parameters and user attributes), so it is tested on an in-memory study; the driver
asks it and does what it says (enqueue, ask, submit, tell).

Example:
    >>> scheduler = Scheduler(slots=[{"seed": 0}], sibling=lambda slot: None, drawn=[], retries=1)
    >>> scheduler.next_trial([])
    NextTrial(kind='enqueue', slot=0, fixed={'seed': 0})
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from steelseg_hpc.sweeps import failures

#: A failed trial's user attribute: True when the driver runs its parameters once more.
RETRY_PLANNED = "retry_planned"
#: A trial's user attributes: its slot, and the failed trial it retries.
SLOT, RETRY_OF = "slot", "retry_of"

ASK, ENQUEUE, WAIT, DONE = "ask", "enqueue", "wait", "done"


@dataclass(frozen=True)
class NextTrial:
    """What to start next.

    Attributes:
        kind: ``ask`` (a queued trial is waiting: ask for it), ``enqueue`` (queue :attr:`fixed`
            for :attr:`slot`, then ask), ``wait`` (the next slot needs its first seed's drawn
            values, not drawn yet) or ``done`` (every slot has its trial).
    """

    kind: str
    slot: int | None = None
    fixed: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Retry:
    """Queue ``params`` again for ``slot``, as a retry of trial ``of``."""

    slot: int
    params: dict[str, Any]
    of: int

    @property
    def user_attrs(self) -> dict[str, Any]:
        return {SLOT: self.slot, RETRY_OF: self.of}


class Scheduler:
    """Decide the next trial and the retries of a sweep from its trials.

    Args:
        slots: Every slot's fixed values, encoded as Optuna stores them (``encode_fixed``).
        sibling: A slot's first-seed slot (None for a first-seed slot).
        drawn: The names of the parameters the sampler draws.
        retries: How often a failed slot is run again.
    """

    def __init__(self, slots: Sequence[dict[str, Any]], sibling: Callable[[int], int | None],
                 drawn: Sequence[str], retries: int):
        self.slots, self.sibling, self.drawn, self.retries = list(slots), sibling, list(drawn), retries

    @staticmethod
    def by_slot(trials: Sequence[FrozenTrial]) -> dict[int, list[FrozenTrial]]:
        """The trials of each slot, in trial order."""
        taken: dict[int, list[FrozenTrial]] = {}
        for trial in trials:
            if SLOT in trial.user_attrs:
                taken.setdefault(trial.user_attrs[SLOT], []).append(trial)
        return taken

    def next_trial(self, trials: Sequence[FrozenTrial]) -> NextTrial:
        """The next trial to start, given every trial of the study."""
        if any(trial.state == TrialState.WAITING for trial in trials):
            return NextTrial(ASK)
        taken = self.by_slot(trials)
        free = [slot for slot in range(len(self.slots)) if slot not in taken]
        if not free:
            return NextTrial(DONE)
        slot = free[0]
        fixed = dict(self.slots[slot])
        sibling = self.sibling(slot)
        if sibling is not None and self.drawn:
            first = next((t for t in taken.get(sibling, []) if all(n in t.params for n in self.drawn)), None)
            if first is None:
                return NextTrial(WAIT, slot)
            fixed.update({name: first.params[name] for name in self.drawn})
        return NextTrial(ENQUEUE, slot, fixed)

    def retry_after_failure(self, trials: Sequence[FrozenTrial], slot: int) -> bool:
        """Whether a trial of ``slot`` that just failed (not yet told) is run again."""
        failed_before = sum(1 for t in self.by_slot(trials).get(slot, []) if t.state == TrialState.FAIL)
        return 1 + failed_before <= self.retries

    @staticmethod
    def lost_retries(trials: Sequence[FrozenTrial]) -> list[Retry]:
        """Retries promised to failed trials (by a driver killed before queueing them)."""
        retried = {trial.user_attrs.get(RETRY_OF) for trial in trials}
        return [Retry(t.user_attrs.get(SLOT, 0), t.params, t.number) for t in trials
                if t.state == TrialState.FAIL and t.user_attrs.get(RETRY_PLANNED) and t.number not in retried]

    @staticmethod
    def failed_point_retries(trials: Sequence[FrozenTrial]) -> list[Retry]:
        """One more trial for every point whose trials all failed (``--retry-failed``)."""
        return [Retry(t.user_attrs[SLOT], t.params, t.number) for t in failures.failed_points(list(trials))]
