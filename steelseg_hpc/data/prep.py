"""``prep``: raw SEM images → a tiled, augmented, resumable Zarr store, with Dask.

The order of work is what makes it safe:

1. read and check every image and mask (in parallel) — any bad input stops here, before a byte
   is written, so an existing store is never touched by a failed run (``--force`` included);
2. build the tile plan (a pure function of the spec and image sizes);
3. write into ``STORE.partial`` — each task writes whole chunks and then sets the tiles' ``done``
   flags, so a crash leaves only unfinished tiles, which a rerun writes;
4. when every tile is done, mark the store complete and move it to ``STORE`` (replacing the old
   one only then).

Example:
    >>> from steelseg_hpc.data import load_spec, prepare
    >>> summary = prepare(load_spec("data_prep/metaldam.toml"), "metaldam.zarr", workers=2)  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from steelseg_hpc.compute.tasks import TaskRunner
from steelseg_hpc.core.errors import DataError
from steelseg_hpc.data.augment import apply_augmentation
from steelseg_hpc.data.plan import TileJob, TilePlan, build_plan
from steelseg_hpc.data.sources import ImageRecord, discover, load_pair
from steelseg_hpc.data.spec import SPLITS, LoadedSpec
from steelseg_hpc.data.store import FORMAT_VERSION, package_versions

log = logging.getLogger(__name__)


@dataclass
class SplitSummary:
    images: int = 0
    tiles: int = 0
    written: int = 0
    bytes: int = 0
    seconds: float = 0.0


@dataclass
class PrepSummary:
    """What a ``prepare`` call did: per split, and whether the store was already up to date."""

    store: Path
    up_to_date: bool
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    wall_seconds: float = 0.0

    @property
    def tiles_written(self) -> int:
        return sum(s.written for s in self.splits.values())


@dataclass(frozen=True)
class ImageCheck:
    key: str
    height: int
    width: int
    digest: str


def check_image(record: ImageRecord, loaded: LoadedSpec) -> ImageCheck:
    """Read one image/mask pair fully and check it can be tiled (runs on a worker)."""
    image, mask = load_pair(record, loaded)
    tile = loaded.spec.tiling.tile_size
    height, width = image.shape
    if height < tile or width < tile:
        raise DataError(
            f"{record.image_path}: image is {width}x{height} px (after cropping), smaller than a {tile} px tile"
        )
    digest = hashlib.blake2b(image.tobytes() + mask.tobytes(), digest_size=8).hexdigest()
    return ImageCheck(record.key, height, width, digest)


def write_image_tiles(
    record: ImageRecord, loaded: LoadedSpec, partial: str, jobs: list[TileJob], whole: tuple[str, int] | None
) -> tuple[dict[str, int], dict[str, float]]:
    """Cut, augment and write the given tiles of one image, then flag them done (runs on a worker).

    Returns tiles written and seconds spent, per split.
    """
    start = time.perf_counter()
    image, mask = load_pair(record, loaded)
    tile = loaded.spec.tiling.tile_size
    written: dict[str, int] = {}
    arrays: dict[str, tuple] = {}
    for job in jobs:
        if job.split not in arrays:
            arrays[job.split] = tuple(
                zarr.open_array(partial, path=f"{job.split}/{name}", mode="r+") for name in ("images", "masks", "done")
            )
        images, masks, done = arrays[job.split]
        tile_image, tile_mask = apply_augmentation(
            image[job.y : job.y + tile, job.x : job.x + tile], mask[job.y : job.y + tile, job.x : job.x + tile], job.params
        )
        images[job.index] = tile_image
        masks[job.index] = tile_mask
        done[job.index] = 1  # after both chunks: a set flag always means a complete tile
        written[job.split] = written.get(job.split, 0) + 1
    if whole is not None:
        split, position = whole
        group = zarr.open_group(partial, path=f"{split}/whole/{position:04d}", mode="r+")
        group["image"][...] = image
        group["mask"][...] = mask
        zarr.open_array(partial, path=f"{split}/whole_done", mode="r+")[position] = 1
    seconds = time.perf_counter() - start
    total = max(sum(written.values()), 1)
    return written, {name: seconds * n / total for name, n in written.items()}


def _store_hash(loaded: LoadedSpec, checks: list[ImageCheck]) -> str:
    content = loaded.spec.fingerprint() + str(FORMAT_VERSION)
    content += "".join(f"{c.key}:{c.digest}" for c in sorted(checks, key=lambda c: c.key))
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def _existing_hash(path: Path) -> tuple[str | None, bool]:
    """(spec_hash, complete) of a store at ``path``; (None, False) if there is none."""
    if not path.exists():
        return None, False
    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:  # anything unreadable is not a store we may resume
        raise DataError(f"{path} exists and is not a steelseg-hpc Zarr store; move it or choose another --out") from None
    if attrs.get("format_version") is None:
        raise DataError(f"{path} exists and is not a steelseg-hpc Zarr store; move it or choose another --out")
    return attrs.get("spec_hash"), bool(attrs.get("complete"))


def _create_layout(path: Path, loaded: LoadedSpec, plan: TilePlan, shapes: dict, spec_hash: str) -> None:
    spec = loaded.spec
    tile = spec.tiling.tile_size
    root = zarr.open_group(str(path), mode="w")
    root.attrs.update(
        {
            "format_version": FORMAT_VERSION,
            "spec_hash": spec_hash,
            "dataset": spec.name,
            "class_names": spec.classes.names,
            "num_classes": len(spec.classes.names),
            "tile_size": tile,
            "stride": spec.tiling.stride,
            "seed": spec.seed,
            "spec": spec.model_dump(mode="json"),
            "versions": package_versions(),
            "complete": False,
        }
    )
    for split, jobs in plan.tiles.items():
        group = root.create_group(split)
        for name in ("images", "masks"):
            group.create_array(name, shape=(len(jobs), tile, tile), chunks=(1, tile, tile), dtype="uint8", fill_value=0)
        group.create_array("done", shape=(len(jobs),), chunks=(1,), dtype="uint8", fill_value=0)
        group.attrs["provenance"] = [job.provenance() for job in jobs]
    for split, records in plan.whole.items():
        group = root.require_group(split)
        group.create_array("whole_done", shape=(len(records),), chunks=(1,), dtype="uint8", fill_value=0)
        for position, record in enumerate(records):
            entry = group.create_group(f"whole/{position:04d}")
            entry.attrs.update({"name": record.key, "group": record.group})
            h, w = shapes[record.key]
            chunk = (min(h, 1024), min(w, 1024))
            for name in ("image", "mask"):
                entry.create_array(name, shape=(h, w), chunks=chunk, dtype="uint8", fill_value=0)


def _missing(path: Path, plan: TilePlan) -> tuple[dict[str, list[TileJob]], dict[str, tuple[str, int]]]:
    """Tiles (by source) and whole images not yet flagged done in the partial store."""
    root = zarr.open_group(str(path), mode="r")
    todo: dict[str, list[TileJob]] = {}
    for split, jobs in plan.tiles.items():
        done = root[split]["done"][...]
        for job in jobs:
            if not done[job.index]:
                todo.setdefault(job.source, []).append(job)
    whole: dict[str, tuple[str, int]] = {}
    for split, records in plan.whole.items():
        done = root[split]["whole_done"][...]
        whole.update({r.key: (split, i) for i, r in enumerate(records) if not done[i]})
    return todo, whole


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def prepare(
    loaded: LoadedSpec,
    out: str | Path,
    workers: int = 2,
    dask_cluster: str = "local",
    profile: str | None = None,
    force: bool = False,
    progress=None,
    runner: TaskRunner | None = None,
) -> PrepSummary:
    """Prepare (or finish, or confirm) the store ``out`` for the spec ``loaded``.

    Args:
        progress: optional callable ``(advance_tiles, total_tiles)`` for a progress bar.
        runner: an already started :class:`TaskRunner` to reuse (then ``workers``,
            ``dask_cluster`` and ``profile`` are ignored).

    Raises:
        DataError: bad input (before anything is written), or ``out`` holds a store prepared from
            a different spec or data and ``force`` is not set.
    """
    started = time.perf_counter()
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    records = discover(loaded)
    if loaded.spec.split.method == "pooled-random":
        log.warning(
            "split 'pooled-random': overlapping tiles of the same image land in both train and val, "
            "which leaks validation pixels into training; val scores will be optimistic"
        )
    if not records:
        raise DataError(f"{loaded.path}: the split assigns no images")
    with contextlib.nullcontext(runner) if runner is not None else TaskRunner(workers, dask_cluster, profile) as runner:
        checks = list(runner.map(check_image, [(r, loaded) for r in records]))
        shapes = {c.key: (c.height, c.width) for c in checks}
        spec_hash = _store_hash(loaded, checks)
        plan = build_plan(loaded.spec, records, shapes)
        summary = PrepSummary(out, up_to_date=False)
        for split in SPLITS:
            if split in plan.tiles:
                sources = {job.source for job in plan.tiles[split]}
                summary.splits[split] = SplitSummary(images=len(sources), tiles=len(plan.tiles[split]))
        final_hash, _ = _existing_hash(out)
        if final_hash == spec_hash:
            summary.up_to_date = True
            _fill_sizes(summary, out)
            summary.wall_seconds = time.perf_counter() - started
            return summary
        if final_hash is not None and not force:
            raise DataError(
                f"{out} was prepared from a different spec or different raw data "
                f"(store {final_hash}, now {spec_hash}); pass --force to rebuild it"
            )
        partial_hash, _ = _existing_hash(partial)
        if partial_hash != spec_hash:
            if partial.exists():
                shutil.rmtree(partial)
            _create_layout(partial, loaded, plan, shapes, spec_hash)
        else:
            log.info("resuming %s", partial)
        todo, whole = _missing(partial, plan)
        calls = _balanced_calls(records, loaded, partial, todo, whole, runner.workers)
        total = sum(len(jobs) for jobs in todo.values())
        if progress is not None:
            progress(0, total)
        for written, seconds in runner.map(write_image_tiles, calls):
            for split, count in written.items():
                summary.splits[split].written += count
                summary.splits[split].seconds += seconds[split]
            if progress is not None:
                progress(sum(written.values()), total)
    _finish(partial, out, plan)
    _fill_sizes(summary, out)
    summary.wall_seconds = time.perf_counter() - started
    return summary


def _balanced_calls(records, loaded, partial, todo, whole, workers):
    """Tasks of at most a few tiles each, largest first, so workers finish together.

    One task per image would leave one worker alone with the last big image; smaller tasks cost
    one extra image read each, which is cheap next to augmenting and compressing tiles.
    """
    total = sum(len(jobs) for jobs in todo.values())
    # the same split for 0 (in-process) and 2 workers, so the two do exactly the same work
    size = max(4, -(-total // (max(workers, 2) * 8)))
    by_key = {r.key: r for r in records}
    calls = []
    for key in sorted(set(todo) | set(whole)):
        jobs = todo.get(key, [])
        batches = [jobs[i : i + size] for i in range(0, len(jobs), size)] or [[]]
        for n, batch in enumerate(batches):
            calls.append((by_key[key], loaded, str(partial), batch, whole.get(key) if n == 0 else None))
    return sorted(calls, key=lambda call: -len(call[3]))


def _finish(partial: Path, out: Path, plan: TilePlan) -> None:
    root = zarr.open_group(str(partial), mode="r+")
    for split in plan.tiles:
        if not np.all(root[split]["done"][...]):
            raise DataError(f"{partial}: tiles of '{split}' are missing after prep; rerun to finish")
    root.attrs["complete"] = True
    if out.exists():
        trash = out.with_name(out.name + ".old")
        shutil.rmtree(trash, ignore_errors=True)
        out.rename(trash)
        partial.rename(out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        partial.rename(out)


def _fill_sizes(summary: PrepSummary, out: Path) -> None:
    for split, entry in summary.splits.items():
        folder = out / split
        entry.bytes = _folder_bytes(folder) if folder.exists() else 0
