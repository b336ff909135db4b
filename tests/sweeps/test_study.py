"""The sweep's journal after a killed driver: what it leaves is repaired, nothing is lost."""
from __future__ import annotations

import os

import optuna
import pytest

from steelseg_hpc.sweeps.study import JOURNAL_LOCK_SUFFIX, TORN_SUFFIX, open_storage, recover_journal


def journal_with_trials(path, count=3) -> bytes:
    study = optuna.create_study(study_name="s", storage=open_storage(str(path)))
    for value in range(count):
        study.enqueue_trial({"x": value})
        study.optimize(lambda t: t.suggest_int("x", 0, 9), n_trials=1)
    return path.read_bytes()


def add_one_trial(path) -> None:
    study = optuna.load_study(study_name="s", storage=open_storage(str(path)))
    study.optimize(lambda t: t.suggest_int("x", 0, 9), n_trials=1)


def test_a_sound_journal_is_left_byte_for_byte(tmp_path):
    path = tmp_path / "study.journal"
    before = journal_with_trials(path)
    assert recover_journal(str(path)) == []
    assert path.read_bytes() == before and not (tmp_path / f"study.journal{TORN_SUFFIX}").exists()
    assert recover_journal(str(tmp_path / "never-written.journal")) == []
    assert recover_journal("postgresql://u@host/db") == []


def test_a_torn_tail_would_break_the_journal_and_is_moved_aside(tmp_path):
    torn = b'{"op_code":4,"worker_id":"abc","trial_id":3,"par'
    control = tmp_path / "control" / "study.journal"
    control.parent.mkdir()
    journal_with_trials(control)
    with control.open("ab") as journal:
        journal.write(torn)
    with pytest.raises((AttributeError, ValueError)):  # Optuna's next write, without the repair
        add_one_trial(control)  # its new line is joined to the torn one, so it never replays
        optuna.load_study(study_name="s", storage=open_storage(str(control))).get_trials()

    path = tmp_path / "study.journal"
    sound = journal_with_trials(path)
    with path.open("ab") as journal:
        journal.write(torn)
    repairs = recover_journal(str(path))
    assert len(repairs) == 1 and f"({len(torn)} bytes)" in repairs[0]
    assert path.read_bytes() == sound
    assert (tmp_path / f"study.journal{TORN_SUFFIX}").read_bytes() == torn + b"\n"
    add_one_trial(path)
    trials = optuna.load_study(study_name="s", storage=open_storage(str(path))).get_trials()
    assert [t.params["x"] for t in trials[:3]] == [0, 1, 2] and len(trials) == 4


def test_a_dead_writers_lock_link_is_removed(tmp_path):
    path = tmp_path / "study.journal"
    journal_with_trials(path, count=1)
    lock = tmp_path / f"study.journal{JOURNAL_LOCK_SUFFIX}"
    os.symlink(path, lock)
    repairs = recover_journal(str(path))
    assert len(repairs) == 1 and lock.name in repairs[0]
    assert not lock.is_symlink()
