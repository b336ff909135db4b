"""Named TOML files (sweeps, profiles, experiments, dataset specs): the user's copy, else the shipped one.

The checkout's top-level ``sweeps/``, ``launch/`` (profiles), ``launch/experiments/`` and
``data_prep/`` hold the files users edit; a wheel ships copies of them in ``steelseg_hpc/shipped/``
(``setup.py`` copies them at build time, so git holds each file once). A name such as ``lora-rank``
finds ``./sweeps/lora-rank.toml`` in the current folder or the nearest parent that has one (so a
project overrides a shipped file by one of the same name), else the shipped copy; a path is itself.
From a checkout (``pip install -e .``, or ``PYTHONPATH``) the shipped copies are the checkout's own.

Example:
    >>> found = find_named("sweep", "lora-rank")  # doctest: +SKIP
    >>> found.describe()  # doctest: +SKIP
    'sweep lora-rank: shipped with steelseg-hpc 0.1.0 (override: ./sweeps/lora-rank.toml)'
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from steelseg_hpc.core.errors import ConfigError

#: Where each kind of named file lives, relative to a project (or the shipped copies' root).
FOLDERS = {"sweep": "sweeps", "profile": "launch", "experiment": "launch/experiments", "dataset": "data_prep"}
#: The folder of the wheel's copies, inside the package.
SHIPPED_FOLDER = "shipped"
DISTRIBUTION = "steelseg-hpc"


@dataclass(frozen=True)
class NamedFile:
    """A named file and where it was found.

    Attributes:
        shipped: the copy shipped with the package (no file of that name in the project).
    """

    kind: str
    name: str
    path: Path
    shipped: bool = False

    def override(self) -> str:
        """Where a file of this name would override the shipped one: ``./sweeps/lora-rank.toml``."""
        return f"./{FOLDERS[self.kind]}/{self.name}.toml"

    def describe(self) -> str:
        """One line for help and ``--dry-run``: the name and where it came from."""
        if self.shipped:
            return f"{self.kind} {self.name}: shipped with {_distribution()} (override: {self.override()})"
        return f"{self.kind} {self.name}: {self.path}"


def _distribution() -> str:
    try:
        return f"{DISTRIBUTION} {metadata.version(DISTRIBUTION)}"
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return DISTRIBUTION


def shipped_root() -> Path | None:
    """The root under which the shipped copies lie in ``FOLDERS`` (None when there are none).

    An installed wheel has them in the package; a checkout's package reads the checkout's files.
    """
    package = Path(__file__).resolve().parents[1]
    if (package / SHIPPED_FOLDER).is_dir():
        return package / SHIPPED_FOLDER
    if (package.parent / "pyproject.toml").is_file():
        return package.parent
    return None


def _project_folders(kind: str, start: Path | None) -> list[Path]:
    here = (start or Path.cwd()).absolute()
    return [folder / FOLDERS[kind] for folder in (here, *here.parents) if (folder / FOLDERS[kind]).is_dir()]


def _is_name(text: str) -> bool:
    return "/" not in text and not text.endswith(".toml")


def find_named(kind: str, name_or_path: str | Path, start: Path | None = None) -> NamedFile | None:
    """The file of ``kind`` given by path, or by name: the project's (nearest first), else the shipped one.

    Args:
        kind: a key of ``FOLDERS`` (``sweep``, ``profile``, ``experiment``, ``dataset``).
        start: the folder the project search starts in (default: the current one).

    Returns:
        The file and where it was found; None when there is none (see :func:`known_names`).
    """
    path = Path(name_or_path)
    if path.is_file():
        return NamedFile(kind, path.stem, path)
    text = str(name_or_path)
    if not _is_name(text):
        return None
    shipped = shipped_root()
    shipped_file = shipped / FOLDERS[kind] / f"{text}.toml" if shipped is not None else None
    for folder in _project_folders(kind, start):
        candidate = folder / f"{text}.toml"
        if candidate.is_file():
            # a checkout's own file is its shipped copy, but it was found as the project's
            return NamedFile(kind, text, candidate)
    if shipped_file is not None and shipped_file.is_file():
        return NamedFile(kind, text, shipped_file, shipped=True)
    return None


def known_names(kind: str, start: Path | None = None) -> list[str]:
    """Every name of ``kind`` that :func:`find_named` finds, for an error message or help."""
    folders = _project_folders(kind, start)
    shipped = shipped_root()
    if shipped is not None and (shipped / FOLDERS[kind]).is_dir():
        folders.append(shipped / FOLDERS[kind])
    return sorted({p.stem for folder in folders for p in folder.glob("*.toml")})


def find_named_or_path(kind: str, name_or_path: str | Path, start: Path | None = None) -> NamedFile:
    """Like :func:`find_named`, but a path that does not exist is returned, for its loader to name.

    Raises:
        ConfigError: a name that is none of the known ones (the message lists them).
    """
    found = find_named(kind, name_or_path, start)
    if found is not None:
        return found
    text = str(name_or_path)
    if not _is_name(text):
        return NamedFile(kind, Path(text).stem, Path(text))
    known = known_names(kind, start)
    hint = f"; known: {', '.join(known)}" if known else ""
    raise ConfigError(f"unknown {kind} {text!r}: no such file or {FOLDERS[kind]}/{text}.toml here or above, "
                      f"nor shipped{hint}")
