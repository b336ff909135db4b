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
