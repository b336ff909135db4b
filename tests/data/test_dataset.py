import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from steelseg_hpc.data import TileDataset
from steelseg_hpc.core.errors import DataError


def test_items_are_float_images_and_long_masks(tiny_store):
    dataset = TileDataset(tiny_store, "train")
    image, mask = dataset[3]
    assert image.shape == (1, 64, 64) and image.dtype == torch.float32
    assert mask.shape == (64, 64) and mask.dtype == torch.int64
    assert 0.0 <= image.min() and image.max() <= 1.0 and mask.max() < dataset.num_classes
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_loader_workers_each_open_the_store(tiny_store):
    loader = DataLoader(TileDataset(tiny_store, "val"), batch_size=5, num_workers=2)
    batches = list(loader)
    assert sum(len(b[0]) for b in batches) == len(loader.dataset)
    assert batches[0][0].shape == (5, 1, 64, 64)


def test_distributed_sampler_partitions_the_tiles(tiny_store):
    dataset = TileDataset(tiny_store, "train")
    shards = [list(DistributedSampler(dataset, num_replicas=2, rank=r, shuffle=True, seed=1)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1])
    assert set(shards[0]) | set(shards[1]) == set(range(len(dataset)))


def test_unknown_split_and_incomplete_store(tiny_store, tmp_path):
    with pytest.raises(DataError, match="no split 'holdout'"):
        TileDataset(tiny_store, "holdout")
    with pytest.raises(DataError, match="not a Zarr store"):
        TileDataset(tmp_path / "missing.zarr", "train")


def _bytes_read() -> int:
    """Bytes this process has read through read syscalls so far (page cache included)."""
    line = next(line for line in open("/proc/self/io") if line.startswith("rchar:"))
    return int(line.split()[1])


def test_one_tile_read_reads_its_chunk_not_the_shard(synthetic_raw, tmp_path):
    from steelseg_hpc.data import load_spec, prepare
    from steelseg_hpc.data.layout import tiles_per_shard

    store = tmp_path / "s.zarr"
    prepare(load_spec(synthetic_raw), store, workers=0)
    dataset = TileDataset(store, "train")
    dataset[0]  # opens the arrays (metadata reads)
    shard_file = store / "train" / "images" / "c" / "0" / "0" / "0"
    tiles_in_shard = min(tiles_per_shard(64), len(dataset))
    assert shard_file.stat().st_size >= tiles_in_shard * 64 * 64  # images are stored raw
    before = _bytes_read()
    image, _ = dataset[len(dataset) // 2]
    read = _bytes_read() - before
    assert 64 * 64 <= read < shard_file.stat().st_size / 4, read
    assert image.shape == (1, 64, 64)


def test_reads_from_inside_a_running_event_loop(tiny_store):
    """A notebook runs cells inside an event loop; a tile read must still work there."""
    import asyncio

    dataset = TileDataset(tiny_store, "val")
    expected = dataset[2]

    async def cell():
        return dataset[2]

    image, mask = asyncio.run(cell())
    assert torch.equal(image, expected[0]) and torch.equal(mask, expected[1])


def test_loader_workers_fork_after_the_parent_has_read(tiny_store):
    dataset = TileDataset(tiny_store, "train")
    first = dataset[0]
    loader = DataLoader(dataset, batch_size=4, num_workers=2, multiprocessing_context="fork")
    images, masks = next(iter(loader))
    assert torch.equal(images[0], first[0]) and torch.equal(masks[0], first[1])


def test_tiles_are_read_through_zarrs(tiny_store):
    """zarr falls back to its own, slower pipeline with only a warning; this would catch it."""
    dataset = TileDataset(tiny_store, "train")
    dataset[0]
    reader = dataset._open()
    assert {type(array.codec_pipeline).__name__ for array in (reader._images, reader._masks)} == {"ZarrsCodecPipeline"}
