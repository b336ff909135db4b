"""DataLoaders over the Zarr tile store for one rank: sharded, seeded, pinned and prefetched.

Training uses ``DistributedSampler`` (shuffled with the run's seed, ``set_epoch`` each epoch, so a
resumed run sees the same order; :class:`ResumableSampler` starts an epoch part-way through that
order after a mid-epoch resume) and drops the ragged last batch so every micro-batch has the same
size (the noise-scale estimator relies on it). Validation gives each rank a strided shard with no
padding, so no tile is counted twice in the metrics.

Example:
    >>> loaders = build_loaders(config, rank=0, world_size=1)  # doctest: +SKIP
    >>> loaders.steps_per_epoch  # optimiser steps per epoch  # doctest: +SKIP
"""
from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from steelseg_hpc.core.errors import DataError, UnknownSplitError
from steelseg_hpc.data import StoreInfo, TileDataset
from steelseg_hpc.training.config import RunConfig

log = logging.getLogger(__name__)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: an unpadded, ordered shard for evaluation."""

    def __init__(self, length: int, rank: int, world_size: int):
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableSampler(Sampler[int]):
    """A ``DistributedSampler`` that can start an epoch after its first ``skip`` indices.

    A mid-epoch resume continues with exactly the tiles the interrupted run had not reached:
    the order is the wrapped sampler's for that epoch (seed + epoch), minus its head. Indices are
    dropped here, before any tile is read, rather than by loading and discarding batches.

    Args:
        sampler: The rank's ``DistributedSampler``.
    """

    def __init__(self, sampler: DistributedSampler):
        self.sampler = sampler
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Shuffle for ``epoch`` and leave out its first ``skip`` indices (this epoch only)."""
        self.sampler.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a DataLoader worker from the seed torch gave it."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@dataclass
class Loaders:
    train: DataLoader
    train_sampler: ResumableSampler
    val: DataLoader
    steps_per_epoch: int  # optimiser steps per epoch
    micro_batches_per_epoch: int  # per rank; a multiple of the accumulation steps


def _loader_options(config: RunConfig, rank: int) -> dict:
    workers = config.data.num_workers
    options = {
        "num_workers": workers,
        "pin_memory": config.data.pin_memory and torch.cuda.is_available(),
        "worker_init_fn": seed_worker,
        "generator": torch.Generator().manual_seed(config.seed + rank),
    }
    if workers > 0:
        options.update(prefetch_factor=config.data.prefetch_factor, persistent_workers=True)
    return options


def batches_of(loader: DataLoader):
    """Iterate ``loader``; a data error in a loader worker is raised as its own one line.

    DataLoader re-raises a worker's exception with the worker's traceback pasted into the
    message, which would reach the user as a page instead of the line that names the file.
    """
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except DataError as exc:
            text = str(exc)
            if text.startswith("Caught ") and "Original Traceback" in text:
                last = text.strip().splitlines()[-1]
                text = last.split(": ", 1)[1] if ": " in last else last
            raise DataError(text) from None
        yield batch


def check_splits(store: StoreInfo, config: RunConfig) -> None:
    """The run's train and val splits must be tile splits of the store; val must not be train.

    Raises:
        DataError: a split the store does not have (the message lists those it has).
    """
    for key, split in (("data.train_split", config.data.train_split), ("data.val_split", config.data.val_split)):
        if split not in store.splits:
            raise UnknownSplitError(f"{key} = {split!r}: the store {store.path} has no such split "
                            f"(it has {', '.join(store.splits) or 'none'})")
        if store.splits[split] == 0:
            raise DataError(f"{key} = {split!r}: the store's split has no tiles")
    if config.data.train_split == config.data.val_split:
        log.warning("data.val_split = data.train_split = %r: validation runs on training tiles, so val "
                    "Dice measures fit, not generalisation, and best-checkpoint choice is optimistic",
                    config.data.val_split)


def build_loaders(config: RunConfig, rank: int, world_size: int,
                  train_set: Dataset | None = None, val_set: Dataset | None = None) -> Loaders:
    """Training and validation loaders of this rank.

    Args:
        config: The run configuration (``data`` section, micro-batch, accumulation, seed).
        rank: This process's rank.
        world_size: Number of ranks.
        train_set, val_set: Datasets to use instead of the store's (tests, benchmarks).

    Raises:
        DataError: too few training tiles for one optimiser step per rank.
    """
    if train_set is None:
        train_set = TileDataset(config.data.store, config.data.train_split)
    if val_set is None:
        val_set = TileDataset(config.data.store, config.data.val_split)
    if config.data.max_train_tiles:
        train_set = Subset(train_set, range(min(config.data.max_train_tiles, len(train_set))))
    sampler = ResumableSampler(DistributedSampler(train_set, num_replicas=world_size, rank=rank,
                                                  shuffle=True, seed=config.seed, drop_last=True))
    train = DataLoader(train_set, batch_size=config.micro_batch, sampler=sampler, drop_last=True,
                       **_loader_options(config, rank))
    steps = len(train) // config.grad_accumulation
    if steps == 0:
        need = config.micro_batch * config.grad_accumulation * world_size
        raise DataError(
            f"{len(train_set)} training tiles are too few for one optimiser step "
            f"(micro_batch x grad_accumulation x ranks = {need}); lower micro_batch or grad_accumulation"
        )
    val = DataLoader(val_set, batch_size=config.eval.batch_size,
                     sampler=ShardSampler(len(val_set), rank, world_size), **_loader_options(config, rank))
    return Loaders(train, sampler, val, steps, steps * config.grad_accumulation)
