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

import os
from pathlib import Path
from typing import BinaryIO

import optuna

from steelseg_hpc.core.errors import ConfigError
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


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage behind ``url`` (a journal file path, or an RDB URL).

    Raises:
        ConfigError: the database cannot be reached (the message names the URL, no password).
    """
    if not is_rdb(url):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url)
        if path.exists() and not path.is_file():
            raise ConfigError(f"--storage {url}: is a folder; expected a journal file or an RDB URL")
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as exc:  # SQLAlchemy raises driver-specific types for every kind of failure
        safe = _without_password(url)
        reason = str(exc).strip().splitlines()[0][:300]
        raise ConfigError(f"--storage {safe}: cannot be reached ({type(exc).__name__}: {reason})") from None


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


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


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
    """Maximise the validation metric; with ``gpu_hours``, also minimise GPU-hours."""
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
