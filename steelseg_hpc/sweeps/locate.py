"""Where a sweep's study is kept: one rule for the driver, ``sweep report`` and ``dashboard``.

The storage named on the command line wins. Otherwise a sweep that has run is found where the
index says it ran (its storage and folder, as recorded when its driver started), so a study kept in
an RDB is found again without repeating ``--storage``. A sweep that has not run yet keeps its
study in the journal file of its folder (``runs/NAME/study.journal``).

Example:
    >>> where = locate_study("lora-rank", None, ExperimentIndex())  # doctest: +SKIP
    >>> where.storage  # doctest: +SKIP
    'runs/lora-rank/study.journal'
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.launch import ExperimentIndex
from steelseg_hpc.sweeps.config import load_sweep
from steelseg_hpc.sweeps.study import storage_url


@dataclass(frozen=True)
class StudyLocation:
    """A sweep's study: its name, its storage (URL or journal path), and the sweep's folder."""

    name: str
    storage: str
    folder: Path


def locate_study(name: str | None, storage: str | None, index: ExperimentIndex,
                 folder: Path | None = None) -> StudyLocation:
    """The study of the sweep ``name`` (None: the sweep that ran last).

    Args:
        name: a sweep's name or its TOML path (``sweeps/NAME.toml`` here or above, else shipped).
        storage: the ``--storage`` given, if any.
        folder: the sweep's folder when the caller has its spec; a run recorded from another
            folder (another ``runs_root``) is another sweep's and is not taken.

    Raises:
        ConfigError: no name and no sweep has run yet, or no sweep file of that name.
    """
    recorded = {entry["name"]: entry for entry in index.sweeps()}
    if name is None:
        if not recorded:
            raise ConfigError("no sweep has run yet: name one (e.g. lora-rank) or pass --storage URL")
        name = next(iter(recorded))
    entry = recorded.get(name)
    if entry is None and folder is None:  # a path, or a sweep not run yet: its file says its folder
        spec = load_sweep(name)
        name, folder = spec.name, spec.folder()
        entry = recorded.get(name)
    if entry is not None and (folder is None or Path(entry["folder"]).resolve() == Path(folder).resolve()):
        return StudyLocation(name, storage or entry["storage"], Path(entry["folder"]))
    return StudyLocation(name, storage_url(storage, folder), Path(folder))
