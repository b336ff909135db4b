"""What a sweep's driver refuses before it adds to its study: trials on another store, or a new
study over the trial run directories of an old one.

A study is one sweep over one dataset: its first driver records the store's identity (the same
:func:`steelseg_hpc.data.store_identity` a run records in ``run.json``: path, dataset, classes and
``spec_hash``, the hash of the spec and of every raw image and mask) as the study's ``store``
user attribute, and a driver re-attached with a ``--store`` of other content is refused, so
``sweep report`` never pools trials of two datasets as seeds of one point. The same content by
another path is the same store.

A sweep folder with trial run directories (``trialNNNN``) but no study in its storage lost its
study (the journal was deleted or emptied, or another ``--storage`` was given): a new study would
number its trials from 0 again, into those directories, and report their old results as its own.
That is refused unless ``--new-study`` asks for it; the old directories are then moved aside.

Example:
    >>> check_study_store({"store": {"spec_hash": "a1"}}, {"spec_hash": "a1"}, "lora-rank")  # same: no error
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna

from steelseg_hpc.core.errors import ConfigError, DataError
from steelseg_hpc.data import open_store, store_identity
from steelseg_hpc.sweeps.study import open_storage, storage_exists

#: The study's user attribute holding its store's identity.
STORE_ATTR = "store"


def identity_of(store: Path) -> dict[str, Any]:
    """The identity of the store at ``store``, as a run records it."""
    return store_identity(open_store(store))


def check_study_store(user_attrs: dict[str, Any], identity: dict[str, Any], name: str) -> None:
    """Refuse ``identity`` when the study (its ``user_attrs``) was run on a store of other content.

    Raises:
        DataError: naming both stores and the ways out.
    """
    recorded = user_attrs.get(STORE_ATTR)
    if not recorded or recorded.get("spec_hash") == identity["spec_hash"]:
        return
    raise DataError(
        f"--store {identity['path']} is not the store sweep {name} was run on: that was "
        f"{recorded.get('dataset')!r} ({recorded.get('num_classes')} classes, hash {recorded.get('spec_hash')}) at "
        f"{recorded.get('path')}; this is {identity['dataset']!r} ({identity['num_classes']} classes, hash "
        f"{identity['spec_hash']}); pass the sweep's store, or sweep this one under another name")


def existing_study(name: str, url: str, storage: optuna.storages.BaseStorage | None = None) -> optuna.Study | None:
    """The study ``name`` in the storage at ``url`` (opened as ``storage``, if given) if there is one.

    Nothing is created.
    """
    if storage is None and not storage_exists(url):
        return None
    storage = storage or open_storage(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if name not in {summary.study_name for summary in optuna.get_all_study_summaries(storage)}:
        return None
    return optuna.load_study(study_name=name, storage=storage)


def trial_dirs(folder: Path) -> list[Path]:
    """The trial run directories in a sweep's folder."""
    return sorted(path for path in Path(folder).glob("trial[0-9]*") if path.is_dir())


def check_no_orphan_trials(folder: Path, name: str, url: str) -> None:
    """Refuse a new study where trial run directories of another are (see the module docstring).

    Raises:
        ConfigError: naming the folder, the storage and the ways out.
    """
    found = trial_dirs(folder)
    if found:
        raise ConfigError(
            f"{folder} has {len(found)} trial run directories ({found[0].name}, ...) but {url} holds no study "
            f"{name!r} (deleted or emptied, or another --storage?); pass the --storage the sweep ran with, or "
            f"start a new study with --new-study (the old trial directories are moved aside)")


def set_aside(folder: Path) -> Path | None:
    """Move the trial run directories into ``previous-TIMESTAMP/``; returns that folder (None if none)."""
    found = trial_dirs(folder)
    if not found:
        return None
    aside = Path(folder) / f"previous-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir()
    for path in found:
        path.rename(aside / path.name)
    return aside
