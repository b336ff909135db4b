"""``prep``: raw SEM images → a tiled, augmented, resumable Zarr store, with Dask.

The order of work is what makes it safe:

1. read and check every image and mask (in parallel) — any bad input stops here, before a byte
   is written, so an existing store is never touched by a failed run (``--force`` included);
2. build the tile plan (a pure function of the spec and image sizes);
3. write into ``STORE.partial`` — each task writes one whole shard (a contiguous range of tiles,
   one file per array, see :mod:`~steelseg_hpc.data.layout`) and then sets that shard's ``done``
   flag, so a set flag always means complete data and a crash leaves only unfinished shards,
   which a rerun writes;
4. when every shard is done, mark the store complete and move it to ``STORE`` (replacing the old
   one only then).

Example:
    >>> from steelseg_hpc.data import load_spec, prepare
    >>> summary = prepare(load_spec("data_prep/metaldam.toml"), "metaldam.zarr", workers=2)  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from steelseg_hpc.compute.tasks import TaskRunner
from steelseg_hpc.compute.writer_lock import WriterLock
from steelseg_hpc.core.errors import DataError
from steelseg_hpc.data.augment import apply_augmentation
from steelseg_hpc.data.layout import create_tile_arrays, tiles_per_shard, zarr_pipeline
from steelseg_hpc.data.plan import TilePlan, build_plan
from steelseg_hpc.data.shard_tasks import ShardTask, shard_tasks, with_records
from steelseg_hpc.data.sources import ImageRecord, data_bit_depth, discover, load_pair, load_raw_pair, to_uint8
from steelseg_hpc.data.spec import SPLITS, LoadedSpec
from steelseg_hpc.data.store import FILES_ATTR, FORMAT_VERSION, check_files, file_manifest, package_versions

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
    bit_depth: int = 8
    colour: bool = False


def check_image(record: ImageRecord, loaded: LoadedSpec) -> ImageCheck:
    """Read one image/mask pair fully and check it can be tiled (runs on a worker)."""
    raw, mask, colour = load_raw_pair(record, loaded)
    if loaded.spec.image_bit_depth is not None:
        to_uint8(raw, loaded.spec.image_bit_depth, record.image_path)  # refuse a bad scaling now
    tile = loaded.spec.tiling.tile_size
    height, width = raw.shape
    if height < tile or width < tile:
        raise DataError(
            f"{record.image_path}: image is {width}x{height} px (after cropping), smaller than a {tile} px tile"
        )
    digest = hashlib.blake2b(raw.tobytes() + mask.tobytes(), digest_size=8).hexdigest()
    return ImageCheck(record.key, height, width, digest, data_bit_depth(raw), colour)


def dataset_bit_depth(loaded: LoadedSpec, checks: list[ImageCheck]) -> int:
    """One scaling for every image: the spec's bit depth, else the most any image uses (a dark
    image of a 12-bit dataset is not brightened as if it were 8-bit)."""
    return loaded.spec.image_bit_depth or max(check.bit_depth for check in checks)


def _warn_about_colour(checks: list[ImageCheck]) -> None:
    coloured = [check.key for check in checks if check.colour]
    if coloured:
        log.warning("%d image(s) have colour content (e.g. %s): converted to grey with ITU-R 601 luma "
                    "weights; the models see one grey channel", len(coloured), coloured[0])


def write_shard(task: ShardTask, loaded: LoadedSpec, partial: str) -> tuple[str, int, float]:
    """Cut, augment and write one shard's tiles and its whole images, then flag them done.

    Runs on a worker. Each array gets the whole shard in one assignment, so each shard file is
    written once, whole; the flags come after the data they vouch for.

    Returns:
        (split, tiles written, seconds spent).
    """
    start = time.perf_counter()
    tile = loaded.spec.tiling.tile_size
    records = {record.key: record for record in task.records}
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def load_once(key: str) -> tuple[np.ndarray, np.ndarray]:
        if key not in pairs:
            pairs[key] = load_pair(records[key], loaded)
        return pairs[key]

    with zarr_pipeline():
        group = zarr.open_group(partial, path=task.split, mode="r+")
        if task.shard is not None:
            images = np.empty((len(task.jobs), tile, tile), dtype=np.uint8)
            masks = np.empty_like(images)
            for row, job in enumerate(task.jobs):
                image, mask = load_once(job.source)
                window = (slice(job.y, job.y + tile), slice(job.x, job.x + tile))
                images[row], masks[row] = apply_augmentation(image[window], mask[window], job.params)
            first, stop = task.shard_range
            group["images"][first:stop] = images
            group["masks"][first:stop] = masks
            group["done"][task.shard] = 1
        for key, position in task.whole:
            image, mask = load_once(key)
            entry = group[f"whole/{position:04d}"]
            entry["image"][...] = image
            entry["mask"][...] = mask
            group["whole_done"][position] = 1
    return task.split, len(task.jobs), time.perf_counter() - start


def _store_hash(loaded: LoadedSpec, checks: list[ImageCheck], shard_sizes: dict[str, int]) -> str:
    content = loaded.spec.fingerprint() + str(FORMAT_VERSION) + repr(sorted(shard_sizes.items()))
    content += "".join(f"{c.key}:{c.digest}" for c in sorted(checks, key=lambda c: c.key))
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def _existing_store(path: Path) -> tuple[str | None, int | None]:
    """(spec_hash, format_version) of a store at ``path``; (None, None) if there is none."""
    if not path.exists():
        return None, None
    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:  # anything unreadable is not a store we may resume
        raise DataError(f"{path} exists and is not a steelseg-hpc Zarr store; move it or choose another --out") from None
    if attrs.get("format_version") is None:
        raise DataError(f"{path} exists and is not a steelseg-hpc Zarr store; move it or choose another --out")
    return attrs.get("spec_hash"), attrs["format_version"]


def _create_layout(path: Path, loaded: LoadedSpec, plan: TilePlan, shapes: dict, spec_hash: str,
                   shard_sizes: dict[str, int]) -> None:
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
            "image_bit_depth": loaded.image_bit_depth,
            "complete": False,
        }
    )
    for split, jobs in plan.tiles.items():
        group = root.create_group(split)
        create_tile_arrays(group, len(jobs), tile, shard_sizes[split])
        group.attrs.update({"tiles_per_shard": shard_sizes[split],
                            "provenance": [{**job.provenance(), "source_bit_depth": loaded.image_bit_depth}
                                           for job in jobs]})
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


def _pending_tasks(path: Path, plan: TilePlan, shard_sizes: dict[str, int],
                   records: list[ImageRecord]) -> list[ShardTask]:
    """Tasks for the shards and whole images not yet flagged done in the partial store."""
    root = zarr.open_group(str(path), mode="r")
    by_key = {record.key: record for record in records}
    tasks = []
    for split in SPLITS:
        if split not in plan.tiles and split not in plan.whole:
            continue
        whole = [record.key for record in plan.whole.get(split, [])]
        tasks += shard_tasks(split, plan.tiles.get(split, []), shard_sizes.get(split, 1),
                             done=root[split]["done"][...] if split in plan.tiles else [],
                             whole=whole, whole_done=root[split]["whole_done"][...] if whole else [])
    # biggest first, so no worker is left alone with a big task at the end
    return sorted((with_records(task, by_key) for task in tasks), key=lambda task: -len(task.jobs))


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
    shard_tiles: int | None = None,
) -> PrepSummary:
    """Prepare (or finish, or confirm) the store ``out`` for the spec ``loaded``.

    Args:
        progress: optional callable ``(advance_tiles, total_tiles)`` for a progress bar.
        runner: an already started :class:`TaskRunner` to reuse (then ``workers``,
            ``dask_cluster`` and ``profile`` are ignored).
        shard_tiles: tiles per shard (default: :func:`~steelseg_hpc.data.layout.tiles_per_shard`
            of the tile size); part of the store's identity, like the spec.

    Raises:
        DataError: bad input (before anything is written), or ``out`` holds a store prepared from
            a different spec or data, or of an older format, and ``force`` is not set, or another
            ``prep`` is writing ``out`` (the message names it).
    """
    out = Path(out)
    # beside the store, not in it: a finished prep replaces the store folder and deletes .partial
    with WriterLock(out.with_name(out.name + ".lock"), out, error=DataError):
        return _prepare(loaded, out, workers, dask_cluster, profile, force, progress, runner, shard_tiles)


def _prepare(loaded: LoadedSpec, out: Path, workers: int, dask_cluster: str, profile: str | None, force: bool,
             progress, runner: TaskRunner | None, shard_tiles: int | None) -> PrepSummary:
    started = time.perf_counter()
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
        _warn_about_colour(checks)
        loaded = dataclasses.replace(loaded, image_bit_depth=dataset_bit_depth(loaded, checks))
        shapes = {c.key: (c.height, c.width) for c in checks}
        plan = build_plan(loaded.spec, records, shapes)
        per_shard = shard_tiles or tiles_per_shard(loaded.spec.tiling.tile_size)
        shard_sizes = {split: min(per_shard, len(jobs)) for split, jobs in plan.tiles.items()}
        spec_hash = _store_hash(loaded, checks, shard_sizes)
        summary = PrepSummary(out, up_to_date=False)
        for split in SPLITS:
            if split in plan.tiles:
                sources = {job.source for job in plan.tiles[split]}
                summary.splits[split] = SplitSummary(images=len(sources), tiles=len(plan.tiles[split]))
        final_hash, final_format = _existing_store(out)
        outdated = final_format is not None and final_format != FORMAT_VERSION
        if outdated and not force:
            raise DataError(
                f"{out} is a store of format {final_format} but this steelseg-hpc writes format "
                f"{FORMAT_VERSION}; re-run prep with --force to rebuild it"
            )
        if final_hash == spec_hash and not outdated and _intact(out, force):
            summary.up_to_date = True
            _fill_sizes(summary, out)
            summary.wall_seconds = time.perf_counter() - started
            return summary
        if final_hash is not None and not force:
            raise DataError(
                f"{out} was prepared from a different spec or different raw data "
                f"(store {final_hash}, now {spec_hash}); pass --force to rebuild it"
            )
        partial_hash, _ = _existing_store(partial)
        if partial_hash != spec_hash:
            if partial.exists():
                shutil.rmtree(partial)
            _create_layout(partial, loaded, plan, shapes, spec_hash, shard_sizes)
        else:
            log.info("resuming %s", partial)
        tasks = _pending_tasks(partial, plan, shard_sizes, records)
        total = sum(len(task.jobs) for task in tasks)
        if progress is not None:
            progress(0, total)
        for split, written, seconds in runner.map(write_shard, [(task, loaded, str(partial)) for task in tasks]):
            summary.splits[split].written += written
            summary.splits[split].seconds += seconds
            if progress is not None:
                progress(written, total)
    _finish(partial, out, plan)
    _fill_sizes(summary, out)
    summary.wall_seconds = time.perf_counter() - started
    return summary


def _intact(out: Path, force: bool) -> bool:
    """Whether the finished store's files are all there; a damaged one is rebuilt only with --force."""
    try:
        check_files(out, dict(zarr.open_group(str(out), mode="r").attrs))
    except DataError:
        if not force:
            raise
        return False
    return True


def _finish(partial: Path, out: Path, plan: TilePlan) -> None:
    root = zarr.open_group(str(partial), mode="r+")
    for split in plan.tiles:
        if not np.all(root[split]["done"][...]):
            raise DataError(f"{partial}: shards of '{split}' are missing after prep; rerun to finish")
    for split in plan.whole:
        if not np.all(root[split]["whole_done"][...]):
            raise DataError(f"{partial}: whole images of '{split}' are missing after prep; rerun to finish")
    root.attrs.update({FILES_ATTR: file_manifest(partial), "complete": True})
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
