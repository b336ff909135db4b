"""The sweep's decisions on an in-memory study: next slot, sibling seeds, retries; no jobs run.

The last tests drive the real driver up to the point where it would submit, to show that a bug in
the space's ``suggest`` stops the sweep instead of being recorded as a failed trial.
"""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from steelseg_hpc.launch import ExperimentIndex
from steelseg_hpc.sweeps.driver import SweepDriver
from steelseg_hpc.sweeps.scheduler import ASK, DONE, ENQUEUE, RETRY_PLANNED, WAIT, Scheduler
from steelseg_hpc.sweeps.study import open_storage, open_study

REPO = Path(__file__).resolve().parents[2]

# Two points (rank 4, 8) x two seeds; lr is drawn. Slots: (4, s0), (8, s0), (4, s1), (8, s1).
SLOTS = [{"rank": 4, "seed": 0}, {"rank": 8, "seed": 0}, {"rank": 4, "seed": 1}, {"rank": 8, "seed": 1}]
SIBLING = {0: None, 1: None, 2: 0, 3: 1}.get


def study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=optuna.storages.InMemoryStorage(), direction="maximize")


def start(study: optuna.Study, scheduler: Scheduler) -> optuna.trial.Trial:
    """Do what the driver does with the scheduler's answer: enqueue, ask, draw."""
    decision = scheduler.next_trial(study.get_trials(deepcopy=False))
    assert decision.kind == ENQUEUE, decision
    study.enqueue_trial(decision.fixed, user_attrs={"slot": decision.slot})
    trial = study.ask()
    trial.suggest_categorical("rank", [4, 8])
    trial.suggest_categorical("seed", [0, 1])
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    return trial


def test_slots_start_in_order_and_a_later_seed_trains_the_values_its_first_seed_drew():
    s, scheduler = study(), Scheduler(SLOTS, SIBLING, drawn=["lr"], retries=1)
    first, second = start(s, scheduler), start(s, scheduler)
    assert (first.params["rank"], first.params["seed"], second.params["rank"]) == (4, 0, 8)
    decision = scheduler.next_trial(s.get_trials(deepcopy=False))
    assert decision.kind == ENQUEUE and decision.slot == 2
    assert decision.fixed == {"rank": 4, "seed": 1, "lr": first.params["lr"]}


def test_a_later_seed_waits_while_its_first_seed_has_not_drawn_yet():
    s, scheduler = study(), Scheduler(SLOTS, SIBLING, drawn=["lr"], retries=1)
    for slot in (0, 1):
        s.enqueue_trial(SLOTS[slot], user_attrs={"slot": slot})
        s.ask()  # asked, nothing drawn yet (a driver killed right after ask)
    assert scheduler.next_trial(s.get_trials(deepcopy=False)).kind == WAIT


def test_a_queued_trial_is_asked_for_first_and_a_full_sweep_is_done():
    s, scheduler = study(), Scheduler(SLOTS[:1], lambda slot: None, drawn=[], retries=0)
    s.enqueue_trial({"rank": 4}, user_attrs={"slot": 0, "retry_of": 7})
    assert scheduler.next_trial(s.get_trials(deepcopy=False)).kind == ASK
    s.ask()
    assert scheduler.next_trial(s.get_trials(deepcopy=False)).kind == DONE


def test_a_failed_slot_is_retried_as_often_as_retries_says_and_no_more():
    s, scheduler = study(), Scheduler(SLOTS, SIBLING, drawn=["lr"], retries=1)
    trial = start(s, scheduler)
    assert scheduler.retry_after_failure(s.get_trials(deepcopy=False), 0)
    s.tell(trial, state=TrialState.FAIL)
    s.enqueue_trial(trial.params, user_attrs={"slot": 0, "retry_of": trial.number})
    retry = s.ask()
    assert not scheduler.retry_after_failure(s.get_trials(deepcopy=False), 0)
    s.tell(retry, state=TrialState.FAIL)
    assert [r.of for r in scheduler.failed_point_retries(s.get_trials(deepcopy=False))] == [retry.number]


def test_a_retry_promised_by_a_killed_driver_is_queued_once():
    s, scheduler = study(), Scheduler(SLOTS, SIBLING, drawn=["lr"], retries=1)
    trial = start(s, scheduler)
    trial.set_user_attr(RETRY_PLANNED, True)
    s.tell(trial, state=TrialState.FAIL)
    (lost,) = scheduler.lost_retries(s.get_trials(deepcopy=False))
    assert (lost.slot, lost.of, lost.params) == (0, trial.number, trial.params)
    s.enqueue_trial(lost.params, user_attrs=lost.user_attrs)
    assert scheduler.lost_retries(s.get_trials(deepcopy=False)) == []


def _driver(tmp_path, tiny_store) -> SweepDriver:
    path = tmp_path / "ranks.toml"
    path.write_text(f'name = "ranks"\nstore = "{tiny_store}"\nprofile = "{REPO / "launch" / "local.toml"}"\n'
                    f'runs_root = "{tmp_path}"\n[base]\narch = "unet3plus"\n'
                    '[space.lr]\nkey = "optimizer.lr"\nvalues = [0.01, 0.001]\n')
    driver = SweepDriver.from_files(path, index=ExperimentIndex(tmp_path / "index.sqlite"))
    driver.folder.mkdir(parents=True)
    driver.study = open_study(driver.spec, open_storage(driver.storage_url, create=True), epochs=1)
    return driver


def test_a_bug_in_the_spaces_suggest_stops_the_driver_and_fails_no_trial(tmp_path, tiny_store, monkeypatch):
    driver = _driver(tmp_path, tiny_store)

    def buggy(trial):
        raise KeyError("a typo in the space")

    monkeypatch.setattr(driver.space, "suggest", buggy)
    with pytest.raises(KeyError, match="a typo in the space"):
        driver._launch_next()
    assert not any(t.state == TrialState.FAIL for t in driver.study.get_trials())


def test_a_queued_value_the_edited_space_no_longer_holds_fails_its_trial_with_the_reason(tmp_path, tiny_store):
    driver = _driver(tmp_path, tiny_store)
    driver.study.enqueue_trial({"lr": "0.5", "seed": 0}, user_attrs={"slot": 0})  # 0.5 was removed
    assert driver._launch_next() is True
    (trial,) = driver.study.get_trials()
    assert trial.state == TrialState.FAIL and "cannot draw parameters: lr:" in trial.user_attrs["fail_reason"]
