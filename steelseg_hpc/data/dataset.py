"""A torch Dataset over a prepared store's tiles.

Example:
    >>> from torch.utils.data import DataLoader
    >>> dataset = TileDataset("store.zarr", "train")  # doctest: +SKIP
    >>> image, mask = dataset[0]  # float32 [1, T, T] in [0, 1], int64 [T, T]  # doctest: +SKIP
    >>> loader = DataLoader(dataset, batch_size=4, num_workers=2, shuffle=True)  # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import zarr.api.asynchronous as zarr_async
from torch.utils.data import Dataset

from steelseg_hpc.core.errors import DataError
from steelseg_hpc.data.layout import zarr_pipeline
from steelseg_hpc.data.store import open_store


async def _open_tile_arrays(store: str, split: str) -> tuple:
    return (await zarr_async.open_array(store=store, path=f"{split}/images", mode="r"),
            await zarr_async.open_array(store=store, path=f"{split}/masks", mode="r"))


async def _read_tile(images, masks, index: int) -> list[np.ndarray]:
    return await asyncio.gather(images.getitem(index), masks.getitem(index))


class _InlineExecutor(ThreadPoolExecutor):
    """Runs each call at once, in the calling thread (asyncio takes only a ThreadPoolExecutor).

    Reading a tile's chunk is shorter than handing it to a thread and back, and on a busy node
    every hand-off may wait for a core.
    """

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting coroutine, as a thread would
            future.set_exception(exc)
        return future


class TileReader:
    """One process's handles on a split's images and masks: reads one tile's two chunks at once.

    zarr's synchronous API hands each call to its event-loop thread, and the codec pipeline each
    chunk to a worker thread, and back: at 256 px that costs more than reading the tile. Here the
    reads run on an event loop of this thread that does blocking work inline. Each read touches
    only the shard index and that tile's inner chunk, not the shard.

    Args:
        store: path of a prepared store (format 2).
        split: ``train``, ``val`` or ``test``.

    Example:
        >>> reader = TileReader("store.zarr", "train")  # doctest: +SKIP
        >>> image, mask = reader.read(0)                # uint8 [T, T] each  # doctest: +SKIP
    """

    def __init__(self, store: str, split: str):
        self.store, self.split = store, split
        self._loop = asyncio.new_event_loop()
        self._loop.set_default_executor(_InlineExecutor())
        with zarr_pipeline():
            self._images, self._masks = self._run(_open_tile_arrays(store, split))

    def _run(self, coroutine):
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: no loop runs in this thread
            return self._loop.run_until_complete(coroutine)
        # called from code inside a running loop (a notebook): zarr's own loop thread serves it
        from zarr.core.sync import sync

        return sync(coroutine)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(image, mask)`` of tile ``index``, uint8 ``[T, T]`` each.

        Raises:
            DataError: the tile's shard cannot be decoded (a damaged file), naming it.
        """
        try:
            image, mask = self._run(_read_tile(self._images, self._masks, index))
        except Exception as exc:  # zarr and its codecs raise many types for a damaged shard
            shard = index // self._images.shards[0]
            raise DataError(f"{self.store}: tile {index} of split '{self.split}' cannot be read from "
                            f"{self.split}/images|masks/c/{shard}/0/0 ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); re-run prep with --force") from None
        return image, mask

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.close()

    def __del__(self) -> None:
        self.close()


class TileDataset(Dataset):
    """Tiles of one split as ``(image float32 [1,T,T] in [0,1], mask int64 [T,T])``.

    The Zarr arrays are opened lazily, once per process (a :class:`TileReader`), so the dataset
    pickles cheaply into DataLoader workers and each worker keeps its own handles. Indexing is
    plain ``0..N-1``, so it works with ``DistributedSampler``.
    """

    def __init__(self, store: str | Path, split: str):
        self.store = str(store)
        self.split = split
        self.info = open_store(store)
        if split not in self.info.splits:
            raise DataError(f"{store}: no split '{split}' (has {', '.join(self.info.splits)})")
        self._length = self.info.splits[split]
        self._reader: TileReader | None = None
        self._pid: int | None = None

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def class_names(self) -> list[str]:
        return self.info.class_names

    def __len__(self) -> int:
        return self._length

    def _open(self) -> TileReader:
        if self._reader is None or self._pid != os.getpid():
            self._reader = TileReader(self.store, self.split)
            self._pid = os.getpid()
        return self._reader

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self._length:
            raise IndexError(f"tile {index} out of range for {self._length} tiles")
        tile, labels = self._open().read(index)
        image = torch.from_numpy(np.asarray(tile, dtype=np.float32) / 255.0).unsqueeze(0)
        mask = torch.from_numpy(np.asarray(labels).astype(np.int64))
        return image, mask

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_reader"] = None  # handles are per process
        return state
