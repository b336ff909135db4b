"""Prep's unit of work: one shard of a split, plus the whole images that begin in it.

A shard is a contiguous, shard-aligned range of tile indices, so its tiles may come from several
images; one task writes it whole, in one assignment per array, and then sets the shard's ``done``
flag. A whole (val/test) image rides along with the shard that holds its first tile, which reads
that image anyway; if that shard is already done, the image gets a task of its own.

Example:
    >>> from steelseg_hpc.data.plan import TileJob
    >>> jobs = [TileJob("train", i, "g/a" if i < 3 else "g/b", "g", 0, 0) for i in range(5)]
    >>> [task.shard_range for task in shard_tasks("train", jobs, 2, done=[0, 1, 0])]
    [(0, 2), (4, 5)]
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from steelseg_hpc.data.plan import TileJob
from steelseg_hpc.data.sources import ImageRecord


@dataclass(frozen=True)
class ShardTask:
    """Write ``split``'s shard ``shard`` (tiles ``jobs``) and the whole images ``whole``.

    Attributes:
        shard: the shard number, or None when only whole images are left to write.
        whole: ``(image key, position)`` of whole images, written to ``split/whole/NNNN``.
        records: the raw images this task reads, by key (filled in by :func:`with_records`).
    """

    split: str
    shard: int | None
    jobs: tuple[TileJob, ...] = ()
    whole: tuple[tuple[str, int], ...] = ()
    records: tuple[ImageRecord, ...] = ()

    @property
    def shard_range(self) -> tuple[int, int] | None:
        """``(first, stop)`` tile indices of the shard, or None."""
        if self.shard is None:
            return None
        return self.jobs[0].index, self.jobs[-1].index + 1

    def sources(self) -> list[str]:
        """Keys of the images this task reads, each once, in order of first use."""
        keys = [job.source for job in self.jobs] + [key for key, _ in self.whole]
        return list(dict.fromkeys(keys))


def shard_tasks(split: str, jobs: Sequence[TileJob], tiles_per_shard: int, done: Sequence[int],
                whole: Sequence[str] = (), whole_done: Sequence[int] = ()) -> list[ShardTask]:
    """The tasks still to run for one split, in shard order.

    Args:
        jobs: the split's tiles in index order (``jobs[i].index == i``).
        done: per shard, 1 if already written.
        whole: keys of the split's whole images, by position; ``whole_done`` flags them.
    """
    pending: dict[int, ShardTask] = {}
    for shard, flag in enumerate(done):
        if not flag:
            chunk = tuple(jobs[shard * tiles_per_shard:(shard + 1) * tiles_per_shard])
            pending[shard] = ShardTask(split, shard, chunk)
    first_tile = {}
    for job in jobs:
        first_tile.setdefault(job.source, job.index)
    alone = []
    for position, key in enumerate(whole):
        if whole_done[position]:
            continue
        shard = first_tile[key] // tiles_per_shard if key in first_tile else None
        if shard in pending:
            task = pending[shard]
            pending[shard] = ShardTask(split, shard, task.jobs, (*task.whole, (key, position)))
        else:
            alone.append(ShardTask(split, None, whole=((key, position),)))
    return [pending[shard] for shard in sorted(pending)] + alone


def with_records(task: ShardTask, records: dict[str, ImageRecord]) -> ShardTask:
    """``task`` carrying the records of the images it reads (what a worker needs, no more)."""
    return ShardTask(task.split, task.shard, task.jobs, task.whole,
                     tuple(records[key] for key in task.sources()))
