"""Prep against the lab's one-process PNG script; 2 Dask workers against one process; tile reads
from the Zarr store against PNG files.

Usage:
    python benchmarks/prep.py [--json] [--tile 256] [--copies 4] [--reads 400] [--rounds 2]
    python benchmarks/prep.py --data synthetic [--size 1660x1640] [--groups 4,4,4] [--tile 800]

Everything runs side by side in this one run, on exactly the same tiles: the PNG script does
what the lab's script did (one process; PIL reads each image, albumentations augments each tile,
PIL writes one PNG per tile image and one per mask), with the windows and augmentation
parameters of prep's own plan, and the run checks that both wrote identical tiles. The default
data are MetalDAM (``data_prep/metaldam.toml``, ``$STEELSEG_METALDAM`` to move it) at 256 px
tiles with 4 augmented copies per train tile; ``--data synthetic`` uses lab-sized synthetic
micrographs. Dask start-up (cluster, worker imports: a one-time cost per prep) is measured
separately and excluded from throughput; the JSON also says whether every Dask worker started
with the worker environment (the malloc thresholds the 2-worker speed depends on). The three
writers take turns for ``--rounds`` rounds and each keeps its best time, so a change of load
during the run (a shared machine) does not land on one of them alone.

Targets: ``prep_2_workers_vs_png_script`` >= 2, ``zarr_vs_png_reads`` >= 2,
``dask_2_workers_vs_1_process`` >= 1.8 (both on an otherwise idle machine with >= 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import zarr  # noqa: E402
from PIL import Image  # noqa: E402

from steelseg_hpc.compute.dask_cluster import worker_environment_mismatches  # noqa: E402
from steelseg_hpc.compute.tasks import TaskRunner  # noqa: E402
from steelseg_hpc.data import load_spec, prepare  # noqa: E402
from steelseg_hpc.data.augment import apply_augmentation  # noqa: E402
from steelseg_hpc.data.dataset import TileReader  # noqa: E402
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


def time_prep(loaded: LoadedSpec, out: Path, runner: TaskRunner) -> tuple[float, int]:
    """(seconds, tiles written) of a fresh prep into ``out`` on an already started runner."""
    start = time.perf_counter()
    summary = prepare(loaded, out, runner=runner)
    return time.perf_counter() - start, summary.tiles_written


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


def time_reads(store: Path, png_dir: Path, count: int, seed: int = 0) -> tuple[float, float]:
    """Training-style random one-tile reads per second (uint8 image + mask): Zarr vs PNG files.

    Zarr is read by TileDataset's reader; the float/long conversion that follows in TileDataset is
    the same for both sources and left out.
    """
    reader = TileReader(str(store), "train")  # opened once, as in a DataLoader worker
    n = zarr.open_array(str(store), path="train/images", mode="r").shape[0]
    order = [random.Random(seed).randrange(n) for _ in range(count)]
    best_zarr = best_png = float("inf")
    for _ in range(5):  # short alternating passes, so a burst of load elsewhere hits both
        start = time.perf_counter()
        for i in order:
            reader.read(i)
        best_zarr = min(best_zarr, time.perf_counter() - start)
        start = time.perf_counter()
        for i in order:
            np.asarray(Image.open(png_path(png_dir, "train", i, "image")))
            np.asarray(Image.open(png_path(png_dir, "train", i, "mask")))
        best_png = min(best_png, time.perf_counter() - start)
    reader.close()
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
    parser.add_argument("--reads", type=int, default=400, help="random tile reads per pass (5 passes)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of the three writers; best of each")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    best = {"png": float("inf"), "serial": float("inf"), "dask": float("inf")}
    with tempfile.TemporaryDirectory(prefix="steelseg-bench-") as tmp:
        root = Path(tmp)
        loaded = benchmark_spec(args, root)
        plan = prep_plan(loaded)
        tiles = sum(len(jobs) for jobs in plan.tiles.values())
        started = time.perf_counter()
        with TaskRunner(2) as dask_runner:
            list(dask_runner.map(_warm_up, [()] * 4))
            startup_s = time.perf_counter() - started
            mismatches = worker_environment_mismatches(dask_runner.client)
            # rounds alternate the three writers, so a change of load hits each; best of the rounds
            for round_ in range(args.rounds):
                last = round_ == args.rounds - 1
                png_dir, serial, dask = root / f"png-{round_}", root / f"serial-{round_}.zarr", root / f"dask-{round_}.zarr"
                best["png"] = min(best["png"], png_script(loaded, plan, png_dir))
                with TaskRunner(0) as in_process:
                    seconds, written = time_prep(loaded, serial, in_process)
                best["serial"] = min(best["serial"], seconds)
                seconds, dask_written = time_prep(loaded, dask, dask_runner)
                best["dask"] = min(best["dask"], seconds)
                assert written == dask_written == tiles, (written, dask_written, tiles)
                shutil.rmtree(serial)
                if not last:
                    shutil.rmtree(png_dir)
                    shutil.rmtree(dask)
        identical = same_tiles(dask, png_dir, plan)
        zarr_rate, png_rate = time_reads(dask, png_dir, args.reads)
        store_mib, png_mib = _mib(dask), _mib(png_dir)
    png_s, serial_s, dask_s = best["png"], best["serial"], best["dask"]
    result = {
        "prep_2_workers_vs_png_script": round(png_s / dask_s, 3),
        "zarr_vs_png_reads": round(zarr_rate / png_rate, 3),
        "dask_2_workers_vs_1_process": round(serial_s / dask_s, 3),
        "data": args.data,
        "tiles": tiles,
        "tile_size": args.tile,
        "copies": args.copies,
        "same_tiles": identical,
        "png_script_tiles_per_s": round(tiles / png_s, 1),
        "one_process_tiles_per_s": round(tiles / serial_s, 1),
        "dask_2_workers_tiles_per_s": round(tiles / dask_s, 1),
        "rounds": args.rounds,
        "dask_startup_s": round(startup_s, 2),
        "workers_had_environment": mismatches == {},
        "worker_environment_mismatches": mismatches,
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
