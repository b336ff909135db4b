"""Prep's units of work: shard-aligned tile ranges, whole images riding with their first tile."""
from pathlib import Path

from steelseg_hpc.data.plan import TileJob
from steelseg_hpc.data.shard_tasks import shard_tasks, with_records
from steelseg_hpc.data.sources import ImageRecord

# 3 images: a has tiles 0-4, b 5-6, c 7-11
JOBS = [TileJob("val", i, "g/a" if i < 5 else "g/b" if i < 7 else "g/c", "g", 0, i) for i in range(12)]


def test_shards_are_contiguous_aligned_ranges_that_may_span_images():
    tasks = shard_tasks("val", JOBS, 4, done=[0, 0, 0])
    assert [task.shard_range for task in tasks] == [(0, 4), (4, 8), (8, 12)]
    assert tasks[1].sources() == ["g/a", "g/b", "g/c"]


def test_only_unfinished_shards_become_tasks():
    assert [task.shard for task in shard_tasks("val", JOBS, 4, done=[1, 0, 1])] == [1]
    assert shard_tasks("val", JOBS, 4, done=[1, 1, 1]) == []


def test_whole_image_rides_with_the_shard_of_its_first_tile_or_goes_alone():
    whole = ["g/a", "g/b", "g/c"]
    tasks = shard_tasks("val", JOBS, 4, done=[0, 0, 0], whole=whole, whole_done=[0, 0, 0])
    assert [(task.shard, task.whole) for task in tasks] == [(0, (("g/a", 0),)), (1, (("g/b", 1), ("g/c", 2))), (2, ())]
    # b and c start in shard 1; once it is done, their whole images get tasks of their own
    tasks = shard_tasks("val", JOBS, 4, done=[0, 1, 0], whole=whole, whole_done=[0, 0, 0])
    assert [(task.shard, task.whole) for task in tasks] == [(0, (("g/a", 0),)), (2, ()), (None, (("g/b", 1),)),
                                                            (None, (("g/c", 2),))]
    tasks = shard_tasks("val", JOBS, 4, done=[1, 1, 1], whole=whole, whole_done=[1, 0, 1])
    assert [(task.shard, task.whole) for task in tasks] == [(None, (("g/b", 1),))]


def test_a_task_carries_only_the_records_it_reads():
    records = {key: ImageRecord(key, "g", Path(f"{key}.png"), Path(f"{key}-mask.png"), "val")
               for key in ("g/a", "g/b", "g/c")}
    task = with_records(shard_tasks("val", JOBS, 4, done=[0, 1, 1])[0], records)
    assert [record.key for record in task.records] == ["g/a"]
