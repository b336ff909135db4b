"""Which codec for the tile store's images and masks: write cost, one-tile read cost, size.

Usage:
    python benchmarks/store_codecs.py [--json] [--tiles 512] [--tile 256] [--copies 4] [--shard 64]

Real MetalDAM tiles (the same windows and augmentations as ``prep``), written shard by shard in
one process as prep's tasks write them, then read back one random tile at a time as
``TileDataset`` does. Images and masks are measured separately: SEM images are noisy and barely
compress, class-index masks compress well. The figures behind the choice are in
``docs/data.md``.
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
from zarr.codecs import BloscCodec, ZstdCodec  # noqa: E402

from steelseg_hpc.data import load_spec  # noqa: E402
from steelseg_hpc.data.augment import apply_augmentation  # noqa: E402
from steelseg_hpc.data.layout import zarr_pipeline  # noqa: E402
from steelseg_hpc.data.plan import build_plan  # noqa: E402
from steelseg_hpc.data.sources import discover, load_pair  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

CODECS = {
    "none": [],
    "zstd-0": [ZstdCodec(level=0)],  # zarr's default (zstd's own default level, 3)
    "zstd-1": [ZstdCodec(level=1)],
    "zstd-9": [ZstdCodec(level=9)],
    "blosc-lz4": [BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle", typesize=1)],
    "blosc-lz4-bitshuffle": [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=1)],
    "blosc-zstd-3": [BloscCodec(cname="zstd", clevel=3, shuffle="noshuffle", typesize=1)],
    "blosc-zstd-3-bitshuffle": [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle", typesize=1)],
}


def metaldam_tiles(count: int, tile: int, copies: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` tiles of prep's plan for MetalDAM (images, masks), in index order."""
    loaded = load_spec(REPO / "data_prep" / "metaldam.toml", tile_size=tile, stride=tile,
                       overrides=[f"augment.copies={copies}"])
    records = discover(loaded)
    images, masks = [], []
    for record in records:
        image, mask = load_pair(record, loaded)
        plan = build_plan(loaded.spec, [record], {record.key: image.shape})
        for job in (job for jobs in plan.tiles.values() for job in jobs):
            window = (slice(job.y, job.y + tile), slice(job.x, job.x + tile))
            tile_image, tile_mask = apply_augmentation(image[window], mask[window], job.params)
            images.append(tile_image)
            masks.append(tile_mask)
        if len(images) >= count:
            break
    return np.stack(images[:count]), np.stack(masks[:count])


def measure(data: np.ndarray, compressors: list, shard: int, folder: Path, reads: int) -> dict:
    """Best of two: write ms per tile (whole shards), read ms per random tile, compression ratio."""
    count, tile = data.shape[0], data.shape[1]
    best_write, best_read = float("inf"), float("inf")
    for attempt in range(2):
        path = folder / f"attempt-{attempt}.zarr"
        with zarr_pipeline():
            array = zarr.create_array(str(path), shape=data.shape, chunks=(1, tile, tile),
                                      shards=(shard, tile, tile), dtype="uint8",
                                      compressors=compressors, fill_value=0)
            start = time.perf_counter()
            for first in range(0, count, shard):
                array[first:first + shard] = data[first:first + shard]
            best_write = min(best_write, time.perf_counter() - start)
            array = zarr.open_array(str(path), mode="r")
        order = [random.Random(attempt).randrange(count) for _ in range(reads)]
        start = time.perf_counter()
        for index in order:
            array[index]
        best_read = min(best_read, time.perf_counter() - start)
        assert np.array_equal(array[...], data)
        stored = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        shutil.rmtree(path)
    return {"write_ms_per_tile": round(1000 * best_write / count, 3),
            "read_ms_per_tile": round(1000 * best_read / reads, 3),
            "compression_ratio": round(data.nbytes / stored, 2)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tiles", type=int, default=512)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--shard", type=int, default=64, help="tiles per shard")
    parser.add_argument("--reads", type=int, default=400)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    images, masks = metaldam_tiles(args.tiles, args.tile, args.copies)
    result: dict = {"tiles": len(images), "tile_size": args.tile, "tiles_per_shard": args.shard}
    with tempfile.TemporaryDirectory(prefix="steelseg-codecs-") as tmp:
        for kind, data in (("images", images), ("masks", masks)):
            result[kind] = {name: measure(data, codecs, args.shard, Path(tmp), args.reads)
                            for name, codecs in CODECS.items()}
    result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if args.json:
        print(json.dumps(result))
    else:
        for kind in ("images", "masks"):
            for name, figures in result[kind].items():
                print(f"{kind:7s} {name:26s} " + "  ".join(f"{k} {v}" for k, v in figures.items()))
        print("load average (1 min) before/after:", result["load_average"])
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
