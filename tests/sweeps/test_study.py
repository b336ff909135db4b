"""The sweep's storage: a killed driver's journal is repaired, nothing is lost; a storage URL is
shown without its password, and a reader never creates a storage that is not there."""
from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from steelseg_hpc.cli import main
from steelseg_hpc.core.errors import DataError
from steelseg_hpc.launch import ExperimentIndex
from steelseg_hpc.sweeps.study import JOURNAL_LOCK_SUFFIX, TORN_SUFFIX, display_url, open_storage, recover_journal
from steelseg_hpc.training.distributed import free_port

REPO = Path(__file__).resolve().parents[2]
SECRET = "Xq7Zr9wPk2"


def journal_with_trials(path, count=3) -> bytes:
    study = optuna.create_study(study_name="s", storage=open_storage(str(path), create=True))
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


@pytest.mark.parametrize("url, shown", [
    (f"mysql+pymysql://me:{SECRET}@db:3306/optuna", "mysql+pymysql://me:***@db:3306/optuna"),
    (f"postgresql://me:{SECRET[:4]}%40{SECRET[4:]}@db/optuna", "postgresql://me:***@db/optuna"),
    (f"postgresql://me:{SECRET[:4]}@{SECRET[4:]}@db/optuna", "postgresql://me:***@db/optuna"),
    (f"postgresql://db/optuna?sslmode=require&password={SECRET}", "postgresql://db/optuna?sslmode=require&password=***"),
    (f"mysql+pymysql://:{SECRET}@db/optuna", "mysql+pymysql://:***@db/optuna"),
    ("postgresql://me@db/optuna", "postgresql://me@db/optuna"),
    ("/runs/lora-rank/study.journal", "/runs/lora-rank/study.journal"),
], ids=["password", "escaped-at", "unescaped-at", "query", "no-user", "no-password", "journal"])
def test_a_storage_url_is_shown_without_its_password(url, shown):
    assert display_url(url) == shown


def status_json(index) -> dict:
    result = CliRunner().invoke(main, ["status", "--json", "--index", str(index)])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_status_shows_a_recorded_rdb_sweep_without_its_password(tmp_path):
    index = tmp_path / "index.sqlite"
    url = f"mysql+pymysql://steelseg:{SECRET}@127.0.0.1:{free_port()}/optuna"  # nothing listens there
    ExperimentIndex(index).record_sweep("rdb", tmp_path / "rdb", url, None)
    (entry,) = status_json(index)["sweeps"]
    assert entry["storage"] == display_url(url) and "cannot be reached" in entry["error"]
    assert SECRET not in json.dumps(entry)


def test_status_and_reports_never_create_a_journal_that_is_gone(tmp_path):
    index, gone = tmp_path / "index.sqlite", tmp_path / "gone" / "study.journal"
    ExperimentIndex(index).record_sweep("gone", gone.parent, str(gone), None)
    (entry,) = status_json(index)["sweeps"]
    assert f"--storage {gone}: no such journal file" in entry["error"]
    report = CliRunner().invoke(main, ["sweep", "report", "gone", "--index", str(index)])
    assert report.exit_code == 2 and "no such journal file" in report.output, report.output
    assert not gone.parent.exists()


def write_sweep_file(folder, store) -> tuple:
    """A sweep file whose journal is folder/damaged/study.journal (nothing of it runs: it is refused first)."""
    path = folder / "damaged.toml"
    path.write_text(f'name = "damaged"\nstore = "{store}"\nprofile = "{REPO / "launch" / "local.toml"}"\n'
                    f'runs_root = "{folder}"\n[base]\narch = "unet3plus"\n'
                    '[space.lr]\nkey = "optimizer.lr"\nvalues = [0.01, 0.001]\n')
    return path, folder / "damaged" / "study.journal"


# Optuna skips a bad last line silently (readers saw a sound study) and stops on one followed by
# others with a bare JSONDecodeError; a valid JSON line that is no entry fails while replaying.
DAMAGE = {"garbage-line": (1, b"garbage\n", "line 2 is not JSON"),
          "garbage-last-line": (None, b"{not json}\n", "is not JSON"),
          "not-an-object": (1, b"[1, 2]\n", "line 2 is not an Optuna journal entry"),
          "not-utf8": (2, b"\xff\xfe\n", "line 3 is not text"),
          "empty-line": (1, b"\n", "line 2 is not JSON"),
          "unknown-operation": (1, b'{"op_code": 99}\n', "its entries do not replay")}


@pytest.mark.parametrize("at, bad, why", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_journal_is_one_line_naming_it_wherever_the_study_is_read_and_is_kept(tmp_path, tiny_store, at,
                                                                                       bad, why):
    sweep_file, journal = write_sweep_file(tmp_path, tiny_store)
    journal.parent.mkdir()
    lines = journal_with_trials(journal).splitlines(keepends=True)
    lines.insert(len(lines) if at is None else at, bad)
    journal.write_bytes(damaged := b"".join(lines))
    index = tmp_path / "index.sqlite"
    ExperimentIndex(index).record_sweep("damaged", journal.parent, str(journal), str(sweep_file))
    expected = f"error: {journal}: the study journal is damaged: "
    for command in (["sweep", "run", str(sweep_file)], ["sweep", "report", "damaged"],
                    ["dashboard", "damaged", "--port", str(free_port())]):
        result = CliRunner().invoke(main, [*command, "--index", str(index)])
        error = result.output.strip().splitlines()[-1]
        assert result.exit_code == 2 and error.startswith(expected) and why in error, (command, result.output)
        assert "Traceback" not in result.output
    (entry,) = status_json(index)["sweeps"]
    assert entry["error"].startswith(f"{journal}: the study journal is damaged: ") and why in entry["error"]
    assert journal.read_bytes() == damaged and sorted(os.listdir(journal.parent)) == ["study.journal"]


def test_a_journal_deleted_or_damaged_under_its_reader_is_one_line_and_is_not_recreated(tmp_path):
    journal = tmp_path / "study.journal"
    journal_with_trials(journal)
    study = optuna.load_study(study_name="s", storage=open_storage(str(journal)))
    saved = journal.read_bytes()
    journal.unlink()
    for touch in (study.get_trials, lambda: study.set_user_attr("driver", "x")):
        with pytest.raises(DataError, match=f"^{journal}: the study journal is gone .*restore it and run the"):
            touch()
        assert not journal.exists()  # a write does not start the study again from nothing
    journal.write_bytes(saved + b"garbage\n")  # restored, then damaged while open
    bad_line = saved.count(b"\n") + 1
    with pytest.raises(DataError, match=f"^{journal}: the study journal is damaged: line {bad_line} is not JSON"):
        study.set_user_attr("driver", "y")  # Optuna writes after the bad line, then reads it


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_storage_not_created_yet_holds_no_study_and_is_not_created_by_looking(tmp_path, kind):
    from steelseg_hpc.sweeps.guards import existing_study

    path = tmp_path / "new" / ("study.journal" if kind == "journal" else "study.db")
    url = str(path) if kind == "journal" else f"sqlite:///{path}"
    assert existing_study("lora-rank", url) is None
    assert not path.exists() and not path.parent.exists()
    open_storage(url, create=True)
    assert existing_study("lora-rank", url) is None  # there now, with no study of that name


def test_a_sweep_run_with_a_storage_is_found_there_again_by_the_driver_report_and_dashboard(tmp_path, tiny_store):
    # `sweep NAME --storage X` and later `sweep NAME` (a re-attach after logout) must be one study:
    # the driver, `sweep report` and `dashboard` resolve the storage by one rule.
    from steelseg_hpc.sweeps.driver import SweepDriver
    from steelseg_hpc.sweeps.locate import locate_study

    path, default_journal = write_sweep_file(tmp_path, tiny_store)
    elsewhere = tmp_path / "elsewhere" / "study.journal"
    index = ExperimentIndex(tmp_path / "index.sqlite")
    assert SweepDriver.from_files(path, index=index).storage_url == str(default_journal)  # never run: the default
    first = SweepDriver.from_files(path, storage=str(elsewhere), index=index)
    index.record_sweep("damaged", first.folder, first.storage_url, str(path))  # what its run() records first
    again = SweepDriver.from_files(path, index=index)
    assert again.storage_url == str(elsewhere)
    assert locate_study("damaged", None, index).storage == str(elsewhere)  # sweep report, dashboard
    assert locate_study(None, None, index).storage == str(elsewhere)  # dashboard without a name
    assert SweepDriver.from_files(path, storage=str(default_journal), index=index).storage_url == str(default_journal)
    moved = path.read_text().replace(f'runs_root = "{tmp_path}"', f'runs_root = "{tmp_path / "other"}"')
    path.write_text(moved)  # another runs_root: another sweep's folder, so not its study
    assert SweepDriver.from_files(path, index=index).storage_url == str(tmp_path / "other" / "damaged" / "study.journal")
