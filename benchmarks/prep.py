"""Prep throughput: 2 Dask workers vs one process, and tile reads from Zarr vs PNG files.

Usage:
    python benchmarks/prep.py [--json] [--size 1660x1640] [--groups 4,4,4] [--tile 800]

Both comparisons run side by side in this one run, on the same synthetic data. Dask start-up
(cluster + worker imports, a one-time cost per prep) is measured separately and excluded from the
throughput ratio. Targets: ``dask_2_workers_vs_1_process`` >= 1.8, ``zarr_vs_png_reads`` >= 1.
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
import zarr  # noqa: E402
from PIL import Image  # noqa: E402

from steelseg_hpc.data import load_spec, prepare  # noqa: E402
from steelseg_hpc.compute.tasks import TaskRunner  # noqa: E402
from steelseg_hpc.data.synth import make_synthetic_dataset  # noqa: E402


def _warm_up() -> bool:
    import steelseg_hpc.data.prep  # noqa: F401  (imports albumentations/torch on the worker)

    return True


def time_prep(spec: Path, out: Path, workers: int) -> tuple[float, float, int]:
    """(start-up seconds, prep seconds, tiles) for a fresh prep with ``workers`` (0 = in-process)."""
    started = time.perf_counter()
    with TaskRunner(workers) as runner:
        list(runner.map(_warm_up, [()] * max(workers, 1) * 2))
        ready = time.perf_counter()
        summary = prepare(load_spec(spec), out, runner=runner)
        done = time.perf_counter()
    return ready - started, done - ready, summary.tiles_written


def time_reads(store: Path, png_dir: Path, count: int, seed: int = 0) -> tuple[float, float]:
    """Tile+mask reads per second from the Zarr store and from PNG files, same random indices."""
    images = zarr.open_array(str(store), path="train/images", mode="r")
    masks = zarr.open_array(str(store), path="train/masks", mode="r")
    n = images.shape[0]
    for i in range(n):
        Image.fromarray(images[i]).save(png_dir / f"{i:06d}_image.png")
        Image.fromarray(masks[i]).save(png_dir / f"{i:06d}_mask.png")
    order = [random.Random(seed).randrange(n) for _ in range(count)]
    start = time.perf_counter()
    for i in order:
        np.asarray(images[i]), np.asarray(masks[i])
    zarr_rate = count / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in order:
        np.asarray(Image.open(png_dir / f"{i:06d}_image.png")), np.asarray(Image.open(png_dir / f"{i:06d}_mask.png"))
    png_rate = count / (time.perf_counter() - start)
    return zarr_rate, png_rate


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--size", default="1660x1640", help="the lab's micrograph size")
    parser.add_argument("--groups", default="4,4,4")
    parser.add_argument("--tile", type=int, default=800, help="the lab's tile; Zarr per-read overhead dominates below ~256 px")
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--reads", type=int, default=400)
    args = parser.parse_args(argv)
    width, height = map(int, args.size.split("x"))
    groups = tuple(int(g) for g in args.groups.split(","))
    with tempfile.TemporaryDirectory(prefix="steelseg-bench-") as tmp:
        root = Path(tmp)
        spec = make_synthetic_dataset(root / "raw", groups, (width, height), seed=0, tile_size=args.tile, copies=args.copies)
        _, serial_s, tiles = time_prep(spec, root / "serial.zarr", workers=0)
        startup_s, dask_s, dask_tiles = time_prep(spec, root / "dask.zarr", workers=2)
        assert dask_tiles == tiles
        png_dir = root / "png"
        png_dir.mkdir()
        zarr_rate, png_rate = time_reads(root / "serial.zarr", png_dir, args.reads)
    result = {
        "dask_2_workers_vs_1_process": round(serial_s / dask_s, 3),
        "zarr_vs_png_reads": round(zarr_rate / png_rate, 3),
        "tiles": tiles,
        "tile_size": args.tile,
        "one_process_tiles_per_s": round(tiles / serial_s, 1),
        "dask_2_workers_tiles_per_s": round(tiles / dask_s, 1),
        "dask_startup_s": round(startup_s, 2),
        "zarr_reads_per_s": round(zarr_rate, 1),
        "png_reads_per_s": round(png_rate, 1),
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32s} {value}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
