"""The tile plan: every tile of every split, with its source window and augmentation, by index.

The plan is a pure function of the spec and the image sizes, so a rerun rebuilds the same plan
and only has to find which indices are not yet written.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from steelseg_hpc.data.augment import sample_augmentation
from steelseg_hpc.data.sources import ImageRecord, stable_seed
from steelseg_hpc.data.spec import SPLITS, DatasetSpec
from steelseg_hpc.data.tiling import windows


@dataclass(frozen=True)
class TileJob:
    """One tile to write: ``split[index]`` = window (y, x) of ``source``, then ``params``."""

    split: str
    index: int
    source: str
    group: str
    y: int
    x: int
    params: dict = field(default_factory=dict, hash=False, compare=False)

    def provenance(self) -> dict:
        return {
            "source": self.source,
            "group": self.group,
            "split": self.split,
            "y": self.y,
            "x": self.x,
            "augmentation": "+".join(self.params) if self.params else "none",
            "params": self.params,
        }


@dataclass
class TilePlan:
    """Tiles per split, and which records keep a whole copy for evaluation."""

    tiles: dict[str, list[TileJob]]
    whole: dict[str, list[ImageRecord]]


def build_plan(spec: DatasetSpec, records: list[ImageRecord], shapes: dict[str, tuple[int, int]]) -> TilePlan:
    """Lay out every tile: originals first per window, then ``augment.copies`` augmented copies.

    With the ``pooled-random`` split, each original window is sent to train or val at random
    (``split.val_fraction``) — the lab's old, leaky behaviour, only behind an explicit option.
    """
    tile, stride = spec.tiling.tile_size, spec.tiling.stride
    pending: dict[str, list[tuple]] = {name: [] for name in SPLITS}
    pool_rng = np.random.default_rng(stable_seed(spec.seed, "pooled"))
    for record in records:
        height, width = shapes[record.key]
        for y, x in windows(height, width, tile, stride):
            split = record.split
            if split is None:
                split = "val" if pool_rng.random() < spec.split.val_fraction else "train"
            pending[split].append((record, y, x, {}))
            if split in spec.augment.splits:
                for copy in range(spec.augment.copies):
                    rng = np.random.default_rng(stable_seed(spec.seed, record.key, y, x, copy))
                    pending[split].append((record, y, x, sample_augmentation(spec.augment, rng)))
    tiles = {
        name: [TileJob(name, i, r.key, r.group, y, x, p) for i, (r, y, x, p) in enumerate(items)]
        for name, items in pending.items()
        if items
    }
    whole = {
        name: [r for r in records if r.split == name]
        for name in spec.whole_image_splits
        if any(r.split == name for r in records)
    }
    return TilePlan(tiles, whole)
