"""Prep against the lab's one-process PNG script; 2 Dask workers against one process; tile reads
from the Zarr store against PNG files.

Usage:
    python benchmarks/prep.py [--json] [--tile 256] [--copies 4] [--reads 400]
    python benchmarks/prep.py --data synthetic [--size 1660x1640] [--groups 4,4,4] [--tile 800]

Everything runs side by side in this one run, on exactly the same tiles: the PNG script does
what the lab's script did (one process; PIL reads each image, albumentations augments each tile,
PIL writes one PNG per tile image and one per mask), with the windows and augmentation
parameters of prep's own plan, and the run checks that both wrote identical tiles. The default
data are MetalDAM (``data_prep/metaldam.toml``, ``$STEELSEG_METALDAM`` to move it) at 256 px
tiles with 4 augmented copies per train tile; ``--data synthetic`` uses lab-sized synthetic
micrographs. Dask start-up (cluster, worker imports: a one-time cost per prep) is measured
separately and excluded from throughput; the JSON also says whether every Dask worker started
with the worker environment (the malloc thresholds the 2-worker speed depends on).

Targets: ``prep_2_workers_vs_png_script`` >= 2, ``zarr_vs_png_reads`` >= 2,
``dask_2_workers_vs_1_process`` >= 1.8 (both on an otherwise idle machine with >= 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import zarr  # noqa: E402
from PIL import Image  # noqa: E402

from steelseg_hpc.compute.dask_cluster import worker_environment_mismatches  # noqa: E402
from steelseg_hpc.compute.tasks import TaskRunner  # noqa: E402
from steelseg_hpc.data import TileDataset, load_spec, prepare  # noqa: E402
from steelseg_hpc.data.augment import apply_augmentation  # noqa: E402
from steelseg_hpc.data.plan import TilePlan, build_plan  # noqa: E402
from steelseg_hpc.data.sources import discover, load_pair  # noqa: E402
from steelseg_hpc.data.spec import LoadedSpec  # noqa: E402
from steelseg_hpc.data.synth import make_synthetic_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METALDAM = Path(os.environ.get("STEELSEG_METALDAM", REPO.parent / "shared" / "data" / "metaldam"))


def _warm_up() -> bool:
    import steelseg_hpc.data.prep  # noqa: F401  (imports albumentations/torch on the worker)

    return True


def benchmark_spec(args, root: Path) -> LoadedSpec:
    """The spec both writers follow: MetalDAM, or synthetic lab-sized data written into ``root``."""
    overrides = [f"augment.copies={args.copies}"]
    if args.data == "metaldam":
        stride = args.stride or args.tile
        return load_spec(REPO / "data_prep" / "metaldam.toml", raw_dir=METALDAM, tile_size=args.tile,
                         stride=stride, overrides=overrides)
    width, height = map(int, args.size.split("x"))
    groups = tuple(int(g) for g in args.groups.split(","))
    spec = make_synthetic_dataset(root / "raw", groups, (width, height), seed=0, tile_size=args.tile,
                                  stride=args.stride, copies=args.copies)
    return load_spec(spec)


def prep_plan(loaded: LoadedSpec) -> TilePlan:
    """Prep's own tile plan: every window and its augmentation parameters, by split and index."""
    records = discover(loaded)
    shapes = {record.key: load_pair(record, loaded)[0].shape for record in records}
    return build_plan(loaded.spec, records, shapes)


def png_path(folder: Path, split: str, index: int, kind: str) -> Path:
    return folder / split / f"{index:06d}_{kind}.png"


def png_script(loaded: LoadedSpec, plan: TilePlan, out: Path) -> float:
    """The lab's way, one process: image by image, cut, augment and save each tile as PNGs.

    Returns:
        Seconds, from reading the first image to writing the last PNG.
    """
    records = {record.key: record for record in discover(loaded)}
    tile = loaded.spec.tiling.tile_size
    by_source: dict[str, list] = {}
    for jobs in plan.tiles.values():
        for job in jobs:
            by_source.setdefault(job.source, []).append(job)
    for split in plan.tiles:
        (out / split).mkdir(parents=True)
    start = time.perf_counter()
    for key, jobs in by_source.items():
        image, mask = load_pair(records[key], loaded)
        for job in jobs:
            window = (slice(job.y, job.y + tile), slice(job.x, job.x + tile))
            tile_image, tile_mask = apply_augmentation(image[window], mask[window], job.params)
            Image.fromarray(tile_image).save(png_path(out, job.split, job.index, "image"))
            Image.fromarray(tile_mask).save(png_path(out, job.split, job.index, "mask"))
    return time.perf_counter() - start


def time_prep(loaded: LoadedSpec, out: Path, workers: int) -> dict:
    """A fresh prep with ``workers`` (0 = in-process): start-up and prep seconds, tiles, worker env."""
    started = time.perf_counter()
    with TaskRunner(workers) as runner:
        list(runner.map(_warm_up, [()] * max(workers, 1) * 2))
        mismatches = worker_environment_mismatches(runner.client) if runner.client is not None else None
        ready = time.perf_counter()
        summary = prepare(loaded, out, runner=runner)
        done = time.perf_counter()
    return {"startup_s": ready - started, "seconds": done - ready, "tiles": summary.tiles_written,
            "environment_mismatches": mismatches}


def same_tiles(store: Path, png_dir: Path, plan: TilePlan) -> bool:
    """Whether every tile image and mask in the store equals the PNG script's."""
    for split, jobs in plan.tiles.items():
        images = zarr.open_array(str(store), path=f"{split}/images", mode="r")[...]
        masks = zarr.open_array(str(store), path=f"{split}/masks", mode="r")[...]
        for job in jobs:
            if not (np.array_equal(images[job.index], np.asarray(Image.open(png_path(png_dir, split, job.index, "image"))))
                    and np.array_equal(masks[job.index], np.asarray(Image.open(png_path(png_dir, split, job.index, "mask"))))):
                return False
    return True


def _as_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """What TileDataset does to a tile after reading it, so both sides pay for it."""
    return (torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0),
            torch.from_numpy(np.asarray(mask).astype(np.int64)))


def time_reads(store: Path, png_dir: Path, count: int, seed: int = 0) -> tuple[float, float]:
    """Training-style random one-tile reads per second (image + mask): TileDataset vs PNG files."""
    dataset = TileDataset(store, "train")
    dataset[0]  # open the arrays, as a DataLoader worker does once
    order = [random.Random(seed).randrange(len(dataset)) for _ in range(count)]
    best_zarr = best_png = float("inf")
    for _ in range(2):  # alternate, so a load change hits both
        start = time.perf_counter()
        for i in order:
            dataset[i]
        best_zarr = min(best_zarr, time.perf_counter() - start)
        start = time.perf_counter()
        for i in order:
            _as_tensors(np.asarray(Image.open(png_path(png_dir, "train", i, "image"))),
                        np.asarray(Image.open(png_path(png_dir, "train", i, "mask"))))
        best_png = min(best_png, time.perf_counter() - start)
    return count / best_zarr, count / best_png


def _mib(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20, 1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--data", choices=("metaldam", "synthetic"), default="metaldam")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--stride", type=int, default=None,
                        help="default: the tile size (MetalDAM), half of it (synthetic, the lab's)")
    parser.add_argument("--copies", type=int, default=4, help="augmented copies per train tile")
    parser.add_argument("--size", default="1660x1640", help="synthetic: the lab's micrograph size")
    parser.add_argument("--groups", default="4,4,4", help="synthetic: images per group")
    parser.add_argument("--reads", type=int, default=400)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="steelseg-bench-") as tmp:
        root = Path(tmp)
        loaded = benchmark_spec(args, root)
        plan = prep_plan(loaded)
        png_s = png_script(loaded, plan, root / "png")
        serial = time_prep(loaded, root / "serial.zarr", workers=0)
        dask = time_prep(loaded, root / "dask.zarr", workers=2)
        tiles = sum(len(jobs) for jobs in plan.tiles.values())
        assert serial["tiles"] == dask["tiles"] == tiles, (serial["tiles"], dask["tiles"], tiles)
        identical = same_tiles(root / "dask.zarr", root / "png", plan)
        zarr_rate, png_rate = time_reads(root / "dask.zarr", root / "png", args.reads)
        store_mib, png_mib = _mib(root / "dask.zarr"), _mib(root / "png")
    result = {
        "prep_2_workers_vs_png_script": round(png_s / dask["seconds"], 3),
        "zarr_vs_png_reads": round(zarr_rate / png_rate, 3),
        "dask_2_workers_vs_1_process": round(serial["seconds"] / dask["seconds"], 3),
        "data": args.data,
        "tiles": tiles,
        "tile_size": args.tile,
        "copies": args.copies,
        "same_tiles": identical,
        "png_script_tiles_per_s": round(tiles / png_s, 1),
        "one_process_tiles_per_s": round(tiles / serial["seconds"], 1),
        "dask_2_workers_tiles_per_s": round(tiles / dask["seconds"], 1),
        "dask_startup_s": round(dask["startup_s"], 2),
        "workers_had_environment": dask["environment_mismatches"] == {},
        "worker_environment_mismatches": dask["environment_mismatches"],
        "zarr_reads_per_s": round(zarr_rate, 1),
        "png_reads_per_s": round(png_rate, 1),
        "store_mib": store_mib,
        "png_mib": png_mib,
        "cpu_count": os.cpu_count(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32s} {value}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
