"""The sweep's Optuna study: where it is stored, and the sampler and pruner a sweep file names.

The default storage is a journal file in the sweep's folder (``study.journal``), written by the
sweep's driver alone: one writer is safe on NFS, where SQLite and the journal's own file locks
are not (optuna#815, #5138). ``--storage URL`` takes any RDB URL (PostgreSQL, MySQL/MariaDB);
the jobs never touch the storage either way.

Example:
    >>> url = storage_url(None, Path("/runs/lora-rank"))
    >>> url
    '/runs/lora-rank/study.journal'
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.storages.journal import JournalFileBackend

from steelseg_hpc.core.errors import ConfigError, DataError
from steelseg_hpc.sweeps.config import SweepSpec

JOURNAL = "study.journal"
#: Where Optuna's JournalFileSymlinkLock puts its lock (the journal's path + ".lock").
JOURNAL_LOCK_SUFFIX = ".lock"
#: The end of a journal cut off by a killed writer is moved here, not deleted.
TORN_SUFFIX = ".torn"


def storage_url(url: str | None, folder: Path) -> str:
    """The storage a sweep uses: ``url`` (RDB or journal path), else the journal in ``folder``."""
    return url if url else str(Path(folder) / JOURNAL)


def is_rdb(url: str) -> bool:
    return "://" in url


def display_url(url: str) -> str:
    """``url`` as it may be printed or logged: an RDB URL's password, and password-like query
    values, become ``***``; a journal path is shown as it is.

    Parsed by hand rather than with SQLAlchemy's ``make_url``: with an unescaped ``@`` in a
    password, ``make_url`` takes the password's tail for the host and would show it.

    Example:
        >>> display_url("mysql+pymysql://me:s3cret@db:3306/optuna?ssl_key=k&password=x")
        'mysql+pymysql://me:***@db:3306/optuna?ssl_key=k&password=***'
    """
    if not is_rdb(url):
        return url
    scheme, _, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")  # the host follows the last "@"
    if at:
        user, colon, _ = credentials.partition(":")
        rest = f"{user}{':***' if colon else ''}@{location}"
    base, question, query = rest.partition("?")
    pairs = (pair.partition("=") for pair in query.split("&")) if question else ()
    query = "&".join(f"{key}={'***' if _is_secret(key) else value}" if eq else key for key, eq, value in pairs)
    return f"{scheme}://{base}{question}{query}"


def _is_secret(key: str) -> bool:
    return any(word in key.lower() for word in ("pass", "pwd", "secret", "token"))


def storage_exists(url: str) -> bool:
    """Whether the storage at ``url`` is there to read: a journal or SQLite file that exists, or a server."""
    if not is_rdb(url):
        return Path(url).is_file()
    database = _sqlite_file(url)
    return database is None or database.is_file()


def open_storage(url: str, create: bool = False) -> optuna.storages.BaseStorage:
    """The Optuna storage behind ``url`` (a journal file path, or an RDB URL).

    Args:
        url: A journal file path, or an RDB URL.
        create: Create a journal (and its folders) or SQLite file that does not exist yet: only
            the sweep's driver does; a reader (status, reports, the dashboard) never creates one.

    Raises:
        ConfigError: no such journal or SQLite file (when not ``create``), or the database
            cannot be reached (the message shows :func:`display_url`, no password).
        DataError: the journal is damaged (the message names it and its first bad line); the
            file is left as it is.
    """
    shown = display_url(url)
    if not is_rdb(url):
        path = Path(url)
        if path.exists() and not path.is_file():
            raise ConfigError(f"--storage {shown}: is a folder; expected a journal file or an RDB URL")
        if not create and not path.exists():
            raise ConfigError(f"--storage {shown}: no such journal file; expected the journal of a sweep that has "
                              "run (steelseg-hpc status lists them) or an RDB URL")
        path.parent.mkdir(parents=True, exist_ok=True)
        return _open_journal(path)
    database = _sqlite_file(url)
    if not create and database is not None and not database.is_file():
        raise ConfigError(f"--storage {shown}: no such SQLite file; expected the storage of a sweep that has run")
    if create and database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    if "@" in (_parsed_host(url) or ""):
        raise ConfigError(f"--storage {shown}: an '@' in the user or password must be written %40")
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as exc:  # SQLAlchemy raises driver-specific types for every kind of failure
        reason = str(exc).strip().splitlines()[0][:300]
        for secret in _secrets(url):
            reason = reason.replace(secret, "***")
        raise ConfigError(f"--storage {shown}: cannot be reached ({type(exc).__name__}: {reason})") \
            from None


def _sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL (None for another database or an in-memory one)."""
    scheme, _, rest = url.partition("://")
    path = rest[1:].partition("?")[0]
    if scheme.split("+")[0] != "sqlite" or path in ("", ":memory:") or path.startswith("file:"):
        return None
    return Path(path)


def _parsed_host(url: str) -> str | None:
    """The host SQLAlchemy reads in ``url`` (None if it cannot parse it)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).host
    except (ArgumentError, ValueError):
        return None


def _secrets(url: str) -> set[str]:
    """The password and password-like query values of an RDB URL, as written and decoded."""
    from urllib.parse import unquote

    credentials, at, location = url.partition("://")[2].rpartition("@")
    found = {credentials.partition(":")[2]} if at else set()
    for pair in location.partition("?")[2].split("&"):
        key, _, value = pair.partition("=")
        if _is_secret(key):
            found.add(value)
    return {text for secret in found for text in (secret, unquote(secret)) if text}


class _JournalFile(JournalFileBackend):
    """Optuna's journal file, whose damage or disappearance is one line naming it.

    Optuna raises a bare ``JSONDecodeError`` for a bad line followed by others, skips a bad last
    line silently, and a write recreates a journal deleted under its process, empty: a study
    would go on from nothing.
    """

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        try:
            yield from super().read_logs(log_number_from)
        except FileNotFoundError:
            raise DataError(_gone(self._file_path)) from None
        except ValueError:  # JSONDecodeError, or Optuna's "Invalid log format." for a torn line
            raise DataError(_damaged(Path(self._file_path))) from None

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if not os.path.isfile(self._file_path):
            raise DataError(_gone(self._file_path))
        super().append_logs(logs)


def _open_journal(path: Path) -> optuna.storages.JournalStorage:
    """The journal's storage, once every complete line of it is an Optuna entry (a last line
    without its newline is one being written, or left by a killed driver: see
    :func:`recover_journal`)."""
    if path.exists() and (damage := journal_damage(path)) is not None:
        raise DataError(damage)
    try:
        return optuna.storages.JournalStorage(_JournalFile(str(path)))
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, AssertionError) as exc:  # do not replay
        raise DataError(f"{path}: the study journal is damaged: its entries do not replay "
                        f"({type(exc).__name__}: {exc}); {_KEPT}") from None


_KEPT = "it is kept as it is: restore it from a backup, or remove the damaged line"


def journal_damage(path: Path) -> str | None:
    """What is wrong with the journal at ``path``, naming it and its first bad line (None if
    every complete line is a JSON object with an ``op_code``, as Optuna writes them)."""
    with path.open("rb") as journal:
        for number, line in enumerate(journal, start=1):
            if not line.endswith(b"\n"):
                break  # the last line, still being written or torn
            try:
                entry = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as exc:
                return _damaged_line(path, number, f"not text (byte {exc.start + 1} is not UTF-8)")
            except json.JSONDecodeError as exc:
                return _damaged_line(path, number, f"not JSON ({exc.msg} at column {exc.colno})")
            if not isinstance(entry, dict) or not isinstance(entry.get("op_code"), int):
                return _damaged_line(path, number, "not an Optuna journal entry (a JSON object with an op_code)")
    return None


def _damaged(path: Path) -> str:
    if not path.is_file():
        return _gone(str(path))
    return journal_damage(path) or f"{path}: the study journal changed while it was read; run the command again"


def _damaged_line(path: Path, number: int, why: str) -> str:
    return f"{path}: the study journal is damaged: line {number} is {why}; {_KEPT}"


def _gone(path: str) -> str:
    return (f"{path}: the study journal is gone (deleted or moved while in use); the trial jobs keep running: "
            "restore it and run the command again to re-attach")


def recover_journal(url: str) -> list[str]:
    """Undo what a killed driver leaves in its journal; call it only while holding the sweep's lock.

    A driver killed while appending leaves Optuna's lock link (every later write waits 30 s for
    it) and maybe a last line without its newline: Optuna skips such a line when reading, but the
    next append would join it to a new line and make the whole journal unreadable. With the sweep's
    lock held no other writer exists, so the link is removed and the torn end moved to
    ``study.journal.torn``.

    Returns:
        One line per repair (none for an RDB URL or a sound journal).
    """
    if is_rdb(url):
        return []
    path, repairs = Path(url), []
    lock = Path(url + JOURNAL_LOCK_SUFFIX)
    if lock.is_symlink() or lock.exists():
        lock.unlink(missing_ok=True)
        repairs.append(f"removed {lock.name}, left by a driver that did not finish writing")
    if not path.is_file():
        return repairs
    with path.open("rb+") as journal:
        size = journal.seek(0, os.SEEK_END)
        complete = _end_of_last_line(journal, size)
        if complete < size:
            journal.seek(complete)
            torn = journal.read()
            with open(url + TORN_SUFFIX, "ab") as kept:
                kept.write(torn + b"\n")
                kept.flush()
                os.fsync(kept.fileno())
            journal.truncate(complete)
            journal.flush()
            os.fsync(journal.fileno())
            repairs.append(f"moved the torn last entry of {path.name} ({size - complete} bytes) to "
                           f"{path.name}{TORN_SUFFIX}")
    return repairs


def _end_of_last_line(journal: BinaryIO, size: int, block: int = 1 << 16) -> int:
    """The offset just past the journal's last newline (0 if it has none)."""
    end = size
    while end > 0:
        start = max(0, end - block)
        journal.seek(start)
        newline = journal.read(end - start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def make_sampler(spec: SweepSpec) -> optuna.samplers.BaseSampler:
    """The sampler of the sampled parameters (enumerated ones are fixed per trial by the driver).

    TPE's options are pinned (Optuna 5 changed their defaults): multivariate, and constant liar
    so trials in flight are not proposed again.
    """
    if spec.sampler.kind == "tpe":
        return optuna.samplers.TPESampler(seed=spec.sampler.seed, multivariate=True, constant_liar=True,
                                          n_startup_trials=max(spec.parallel, 4))
    return optuna.samplers.RandomSampler(seed=spec.sampler.seed)


def make_pruner(spec: SweepSpec, epochs: int) -> optuna.pruners.BasePruner:
    if spec.pruner.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner.startup_trials,
                                           n_warmup_steps=spec.pruner.warmup_epochs)
    if spec.pruner.kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(spec.pruner.warmup_epochs, 1), max_resource=epochs)
    return optuna.pruners.NopPruner()


def directions(spec: SweepSpec) -> list[str]:
    """Maximise the validation metric; with ``gpu_hours``, also minimise the cost (GPU- or CPU core-hours)."""
    return ["maximize", "minimize"] if spec.objective.gpu_hours else ["maximize"]


def open_study(spec: SweepSpec, storage: optuna.storages.BaseStorage, epochs: int) -> optuna.Study:
    """The sweep's study (created on the first run, loaded by every later one)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=spec.name, storage=storage, directions=directions(spec),
                               sampler=make_sampler(spec), pruner=make_pruner(spec, epochs),
                               load_if_exists=True)


def load_existing_study(name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """A study that exists already (for reports, status and the dashboard).

    Raises:
        ConfigError: no study of that name in the storage (the message lists those there are).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
    if name not in names:
        raise ConfigError(f"no sweep {name!r} in this storage (studies: {', '.join(names) or 'none'}); "
                          f"run it first: steelseg-hpc sweep {name}")
    return optuna.load_study(study_name=name, storage=storage)
