"""A torch Dataset over a prepared store's tiles.

Example:
    >>> from torch.utils.data import DataLoader
    >>> dataset = TileDataset("store.zarr", "train")  # doctest: +SKIP
    >>> image, mask = dataset[0]  # float32 [1, T, T] in [0, 1], int64 [T, T]  # doctest: +SKIP
    >>> loader = DataLoader(dataset, batch_size=4, num_workers=2, shuffle=True)  # doctest: +SKIP
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset

from steelseg_hpc.data.store import open_store
from steelseg_hpc.core.errors import DataError


class TileDataset(Dataset):
    """Tiles of one split as ``(image float32 [1,T,T] in [0,1], mask int64 [T,T])``.

    The Zarr arrays are opened lazily, once per process, so the dataset pickles cheaply into
    DataLoader workers and each worker keeps its own handles. Indexing is plain ``0..N-1``, so it
    works with ``DistributedSampler``.
    """

    def __init__(self, store: str | Path, split: str):
        self.store = str(store)
        self.split = split
        self.info = open_store(store)
        if split not in self.info.splits:
            raise DataError(f"{store}: no split '{split}' (has {', '.join(self.info.splits)})")
        self._length = self.info.splits[split]
        self._arrays: tuple | None = None
        self._pid: int | None = None

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def class_names(self) -> list[str]:
        return self.info.class_names

    def __len__(self) -> int:
        return self._length

    def _open(self) -> tuple:
        if self._arrays is None or self._pid != os.getpid():
            group = zarr.open_group(self.store, mode="r")[self.split]
            self._arrays = (group["images"], group["masks"])
            self._pid = os.getpid()
        return self._arrays

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self._length:
            raise IndexError(f"tile {index} out of range for {self._length} tiles")
        images, masks = self._open()
        image = torch.from_numpy(np.asarray(images[index], dtype=np.float32) / 255.0).unsqueeze(0)
        mask = torch.from_numpy(np.asarray(masks[index]).astype(np.int64))
        return image, mask

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = None  # handles are per process
        return state
