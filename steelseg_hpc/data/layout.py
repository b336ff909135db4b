"""How the tile store lies on disk: tiles in shards, their codecs, and the codec pipeline.

Every tile of a split is one inner chunk ``(1, T, T)``; :func:`tiles_per_shard` consecutive tiles
form one shard file (Zarr v3's sharding codec), written whole by one prep task. A reader of one
tile reads the shard's index and that tile's chunk, never the whole shard.

Codecs, chosen by measurement (``benchmarks/store_codecs.py``, figures in ``docs/data.md``):
SEM images are noisy and shrink by only ~20 % under any codec, so they are stored raw (fastest to
write and read); class-index masks shrink ~15x with zstd at no measurable cost.

Arrays are read and written through zarrs (Rust) as zarr-python's codec pipeline: same Zarr v3
files, several times less per-call overhead, which dominates at 256 px tiles.

Example:
    >>> tiles_per_shard(256), tiles_per_shard(800), tiles_per_shard(64)
    (64, 6, 1024)
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import zarr
import zarrs  # noqa: F401  (the pipeline named in _PIPELINE: missing, it fails here, by name)
from zarr.codecs import ZstdCodec

#: Uncompressed image bytes per shard: big enough that a shard's fixed costs (a file, a task)
#: vanish, small enough that a training-size split still gives every Dask worker many tasks.
SHARD_BYTES = 4 << 20

IMAGE_COMPRESSORS: tuple = ()
MASK_COMPRESSORS = (ZstdCodec(level=1),)

#: zarrs as the codec pipeline, one Rust thread: prep runs one task per single-threaded Dask
#: worker and TileDataset one reader per DataLoader process, so more threads only compete.
_PIPELINE = {"codec_pipeline.path": "zarrs.ZarrsCodecPipeline", "threading.max_workers": 1}


def tiles_per_shard(tile_size: int) -> int:
    """Tiles in one shard for ``tile_size`` px tiles: about :data:`SHARD_BYTES` of image data."""
    return max(1, SHARD_BYTES // (tile_size * tile_size))


@contextlib.contextmanager
def zarr_pipeline() -> Iterator[None]:
    """Arrays *opened or created* inside this block read and write through zarrs.

    The pipeline is fixed when an array object is made, so the array keeps it after the block.
    zarrs serves local folders (and object stores); zarr's own pipeline serves the rest.

    Example:
        >>> import tempfile
        >>> with zarr_pipeline():
        ...     array = zarr.create_array(tempfile.mkdtemp(), shape=(4,), dtype="uint8")
        >>> type(array._async_array.codec_pipeline).__name__
        'ZarrsCodecPipeline'
    """
    with zarr.config.set(_PIPELINE):
        yield


def create_tile_arrays(group: zarr.Group, count: int, tile_size: int, shard: int) -> None:
    """Create a split's ``images``, ``masks`` and ``done`` arrays (metadata only) in ``group``.

    ``done[k]`` is 1 once shard ``k`` (tiles ``k*shard`` up to ``(k+1)*shard``) of both arrays is
    written; each flag is its own chunk, so parallel tasks never write the same file.

    Args:
        count: tiles N; ``images`` and ``masks`` are uint8 ``[N, tile_size, tile_size]``.
        shard: tiles per shard file.

    Example:
        >>> import tempfile
        >>> group = zarr.open_group(tempfile.mkdtemp(), mode="w")
        >>> create_tile_arrays(group, count=10, tile_size=8, shard=4)
        >>> group["images"].shards, group["images"].chunks, group["done"].shape
        ((4, 8, 8), (1, 8, 8), (3,))
    """
    inner, outer = (1, tile_size, tile_size), (shard, tile_size, tile_size)
    for name, compressors in (("images", IMAGE_COMPRESSORS), ("masks", MASK_COMPRESSORS)):
        group.create_array(name, shape=(count, tile_size, tile_size), chunks=inner, shards=outer,
                           dtype="uint8", compressors=compressors, fill_value=0)
    group.create_array("done", shape=(-(-count // shard),), chunks=(1,), dtype="uint8", fill_value=0)
