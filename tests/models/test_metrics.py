"""Epoch metrics from a torchmetrics confusion matrix, including under torch.distributed."""
from __future__ import annotations

import json
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.models.metrics import SegmentationMetrics


def _labels(rows):
    return torch.tensor(rows).unsqueeze(0)


def test_hand_computed_values():
    target = _labels([[0, 0, 1, 1], [2, 2, 2, 2]])
    preds = _labels([[0, 1, 1, 1], [2, 2, 0, 2]])
    metrics = SegmentationMetrics(3, ["a", "b", "c"])
    metrics.update(preds, target)
    result = metrics.compute()
    assert result["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 3]]
    assert result["pixel_accuracy"] == pytest.approx(6 / 8)
    assert result["iou_per_class"] == pytest.approx([1 / 3, 2 / 3, 3 / 4])
    assert result["dice_per_class"] == pytest.approx([2 / 4, 4 / 5, 6 / 7])
    assert result["miou"] == pytest.approx((1 / 3 + 2 / 3 + 3 / 4) / 3)
    assert result["dice_macro"] == pytest.approx((2 / 4 + 4 / 5 + 6 / 7) / 3)
    assert result["class_names"] == ["a", "b", "c"]
    json.dumps(result)  # plain Python values only


def test_absent_class_is_none_and_left_out_of_the_means():
    target = _labels([[0, 1], [1, 1]])
    metrics = SegmentationMetrics(4)
    metrics.update(target, target)
    result = metrics.compute()
    assert result["iou_per_class"] == [1.0, 1.0, None, None]
    assert result["miou"] == 1.0 and result["dice_macro"] == 1.0
    json.dumps(result)


def test_a_predicted_but_absent_class_counts_as_zero():
    metrics = SegmentationMetrics(3)
    metrics.update(_labels([[0, 2]]), _labels([[0, 0]]))
    result = metrics.compute()
    assert result["iou_per_class"] == [0.5, None, 0.0]
    assert result["miou"] == pytest.approx(0.25)


def test_accumulates_over_batches_and_resets():
    torch.manual_seed(0)
    logits, target = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4, 8, 8))
    whole, batched = SegmentationMetrics(3), SegmentationMetrics(3)
    whole.update(logits, target)
    for i in range(4):
        batched.update([logits[i : i + 1]], target[i : i + 1])  # a deep-supervision list
    assert whole.compute() == batched.compute()
    batched.reset()
    batched.update(target, target)
    assert batched.compute()["pixel_accuracy"] == 1.0


def test_ignore_index_and_validation():
    metrics = SegmentationMetrics(2, ignore_index=255)
    metrics.update(_labels([[0, 1, 1]]), _labels([[0, 255, 1]]))
    assert metrics.compute()["confusion"] == [[1, 0], [0, 1]]
    with pytest.raises(ConfigError):
        SegmentationMetrics(3, ["only", "two"])
    with pytest.raises(ValueError):
        metrics.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 3, 3, dtype=torch.long))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, preds, target, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        metrics = SegmentationMetrics(3)
        metrics.update(preds[rank::world], target[rank::world])  # each rank sees half the epoch
        queue.put((rank, metrics.compute()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_result_equals_single_process():
    torch.manual_seed(0)
    preds, target = torch.randint(0, 3, (6, 8, 8)), torch.randint(0, 3, (6, 8, 8))
    single = SegmentationMetrics(3)
    single.update(preds, target)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(_rank_worker, args=(2, _free_port(), preds, target, queue), nprocs=2,
                       start_method="spawn")
    results = dict(queue.get(timeout=60) for _ in range(2))
    assert results[0] == results[1] == single.compute()
