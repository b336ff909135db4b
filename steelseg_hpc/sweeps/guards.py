"""What a sweep's driver refuses before it adds to its study: trials on another store.

A study is one sweep over one dataset: its first driver records the store's identity (the same
:func:`steelseg_hpc.data.store_identity` a run records in ``run.json``: path, dataset, classes and
``spec_hash``, the hash of the spec and of every raw image and mask) as the study's ``store``
user attribute, and a driver re-attached with a ``--store`` of other content is refused, so
``sweep report`` never pools trials of two datasets as seeds of one point. The same content by
another path is the same store.

Example:
    >>> check_study_store({"store": {"spec_hash": "a1"}}, {"spec_hash": "a1"}, "lora-rank")  # same: no error
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from steelseg_hpc.core.errors import DataError
from steelseg_hpc.data import open_store, store_identity
from steelseg_hpc.sweeps.study import is_rdb, open_storage

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


def existing_study(name: str, url: str) -> optuna.Study | None:
    """The study ``name`` in the storage at ``url`` if there is one (nothing is created)."""
    if not is_rdb(url) and not Path(url).is_file():
        return None
    storage = open_storage(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if name not in {summary.study_name for summary in optuna.get_all_study_summaries(storage)}:
        return None
    return optuna.load_study(study_name=name, storage=storage)
