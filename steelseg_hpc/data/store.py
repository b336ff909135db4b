"""The Zarr v3 tile store: its layout, and reading it back.

Layout (see ``docs/contracts.md``)::

    STORE.zarr/                 attrs: format_version, spec_hash, dataset, class_names, num_classes,
                                       tile_size, stride, versions, complete
      <split>/images  uint8 [N, T, T]   one tile per inner chunk, S tiles per shard file
      <split>/masks   uint8 [N, T, T]   class indices, same chunks and shards
      <split>/done    uint8 [ceil(N/S)] 1 once shard k (tiles kS .. kS+S-1) is written
      <split>/whole/NNNN/{image,mask}   whole images (val, test) for sliding-window evaluation

Example:
    >>> info = open_store("runs/demo/store.zarr")  # doctest: +SKIP
    >>> info.class_names, info.splits  # doctest: +SKIP
    (['ferrite', 'pearlite', 'carbide'], {'train': 340, 'val': 12, 'test': 8})
"""
from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from steelseg_hpc.data.spec import SPLITS
from steelseg_hpc.core.errors import DataError

#: 2: tiles in shards (``steelseg_hpc.data.layout``), ``done`` per shard; 1: one file per tile.
FORMAT_VERSION = 2
_VERSIONED = ("steelseg-hpc", "numpy", "zarr", "albumentations", "dask", "opencv-python-headless", "pillow")


@dataclass(frozen=True)
class StoreInfo:
    """What a prepared store holds: classes, tile size and tile counts per split."""

    path: Path
    dataset: str
    class_names: list[str]
    tile_size: int
    stride: int
    spec_hash: str
    splits: dict[str, int]
    whole_images: dict[str, int]
    complete: bool

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def open_store(path: str | Path, require_complete: bool = True) -> StoreInfo:
    """Read a store's attributes and tile counts.

    Raises:
        DataError: the path is not a steelseg-hpc store, or it is incomplete (prep was
            interrupted; rerun the same ``prep`` command to finish it).
    """
    path = Path(path)
    try:
        root = zarr.open_group(str(path), mode="r")
        attrs = dict(root.attrs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError):
        raise DataError(f"{path}: not a Zarr store (run `steelseg-hpc prep SPEC --out {path}`)") from None
    version = attrs.get("format_version")
    if version is None or "class_names" not in attrs:
        raise DataError(f"{path}: not a steelseg-hpc store (run `steelseg-hpc prep SPEC --out {path}`)")
    if version != FORMAT_VERSION:
        raise DataError(f"{path}: store format {version}, but this steelseg-hpc reads format {FORMAT_VERSION}; "
                        f"re-run `steelseg-hpc prep SPEC --out {path} --force`")
    if require_complete and not attrs.get("complete", False):
        raise DataError(f"{path}: store is incomplete; rerun the same `steelseg-hpc prep` command to finish it")
    if require_complete:
        check_files(path, attrs)
    splits, whole = {}, {}
    for name in SPLITS:
        if name in root:
            splits[name] = int(root[name]["images"].shape[0])
            whole[name] = len(root[name]["whole"]) if "whole" in root[name] else 0
    return StoreInfo(
        path=path,
        dataset=attrs.get("dataset", ""),
        class_names=list(attrs["class_names"]),
        tile_size=int(attrs["tile_size"]),
        stride=int(attrs["stride"]),
        spec_hash=attrs.get("spec_hash", ""),
        splits=splits,
        whole_images=whole,
        complete=bool(attrs.get("complete", False)),
    )


#: Store attribute listing every data file of a finished store with its size (``zarr.json`` aside).
FILES_ATTR = "files"


def file_manifest(path: Path) -> dict[str, int]:
    """Every data file under a store (shard, chunk and flag files) with its size in bytes."""
    return {str(f.relative_to(path)): f.stat().st_size for f in sorted(Path(path).rglob("*"))
            if f.is_file() and f.name != "zarr.json"}


def _what(path: Path, relative: str) -> str:
    """What a data file holds, in the user's words: a split's tiles, a whole image, a flag."""
    parts = relative.split("/")
    split = parts[0]
    if len(parts) >= 4 and parts[1] in ("images", "masks") and parts[2] == "c":
        per_shard = int(zarr.open_group(str(path), path=split, mode="r").attrs.get("tiles_per_shard", 1))
        first = int(parts[3]) * per_shard
        return f"tiles {first}-{first + per_shard - 1} of split '{split}' ({parts[1]})"
    if len(parts) >= 3 and parts[1] == "whole":
        return f"whole image {int(parts[2])} of split '{split}'"
    return f"part of split '{split}'"


def check_files(path: Path, attrs: dict) -> None:
    """Refuse a store whose data files are missing or cut short since prep finished.

    Zarr reads a missing chunk as zeros, so a deleted shard would train on black tiles with an
    all-class-0 mask without a word. Prep records every file's size; a file that is gone or has
    another size is a damaged store, named with the split and tiles it held.

    Raises:
        DataError: naming the first damaged file and what it held.
    """
    recorded = attrs.get(FILES_ATTR)
    if recorded is None:
        return  # written before stores recorded their files
    found = file_manifest(path)
    damaged = [(name, size) for name, size in recorded.items() if found.get(name) != size]
    if not damaged:
        return
    name, size = damaged[0]
    why = "missing" if name not in found else f"{found[name]} bytes, {size} written (cut short?)"
    raise DataError(f"{path} is damaged: {len(damaged)} file(s) missing or changed since prep, e.g. {name} "
                    f"({why}), which holds {_what(path, name)}; re-run `steelseg-hpc prep SPEC --out {path} --force`")


def store_identity(info: StoreInfo) -> dict:
    """What identifies a store's content, wherever it lies: its absolute path, dataset, classes and
    ``spec_hash`` (prep's hash of the spec and of every raw image and mask it was made from)."""
    return {"path": str(Path(info.path).absolute()), "spec_hash": info.spec_hash, "dataset": info.dataset,
            "num_classes": info.num_classes, "class_names": list(info.class_names), "tile_size": info.tile_size}


def check_same_store(recorded: dict, found: StoreInfo, owner: str) -> None:
    """Refuse ``found`` when ``recorded`` (a :func:`store_identity`) names another store's content.

    Raises:
        DataError: naming both stores, so the user can point at the right one.
    """
    if not recorded or recorded.get("spec_hash") == found.spec_hash:
        return
    raise DataError(
        f"{found.path} is not the store {owner} was trained on: that was {recorded.get('dataset')!r} "
        f"({recorded.get('num_classes')} classes, hash {recorded.get('spec_hash')}) at {recorded.get('path')}; "
        f"this is {found.dataset!r} ({found.num_classes} classes, hash {found.spec_hash}); point --store at "
        "the run's store or use a new --run-dir")


def read_provenance(store: str | Path, split: str) -> list[dict]:
    """The per-tile provenance rows of ``split``, in tile-index order.

    Each row has ``index, source, group, split, y, x, augmentation, params``; ``augmentation`` is
    ``"none"`` for an original tile, else the applied ops joined by ``+``.
    """
    root = zarr.open_group(str(store), mode="r")
    if split not in root:
        raise DataError(f"{store}: no split '{split}' (has {', '.join(k for k in SPLITS if k in root)})")
    return [dict(row, index=i) for i, row in enumerate(root[split].attrs["provenance"])]


class WholeImages:
    """Whole (untiled) images of a split, for sliding-window evaluation.

    Example:
        >>> for name, image, mask in WholeImages("store.zarr", "test"):  # doctest: +SKIP
        ...     print(name, image.shape)
    """

    def __init__(self, store: str | Path, split: str):
        self.store = str(store)
        root = zarr.open_group(self.store, mode="r")
        if split not in root or "whole" not in root[split]:
            raise DataError(f"{store}: split '{split}' has no whole images (see the spec's whole_image_splits)")
        self._group = root[split]["whole"]
        self._keys = sorted(self._group.group_keys())

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, index: int) -> tuple[str, np.ndarray, np.ndarray]:
        entry = self._group[self._keys[index]]
        return entry.attrs["name"], entry["image"][...], entry["mask"][...]

    def __iter__(self):
        return (self[i] for i in range(len(self)))
