"""What activation checkpointing needs besides ``torch.utils.checkpoint``: BatchNorm statistics kept.

Used by :class:`~steelseg_hpc.models.blocks.AggregationStage` when ``activation_checkpointing`` is on.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch.nn as nn


@contextlib.contextmanager
def running_stats_kept(module: nn.Module) -> Iterator[None]:
    """Undo what a forward inside the block does to the BatchNorm running statistics of ``module``.

    Activation checkpointing runs a stage's forward a second time during backward; in training
    mode that second pass would update every running mean and variance (and batch count) again,
    so a checkpointed model would evaluate differently from an uncheckpointed one.

    Example:
        >>> import torch
        >>> bn = nn.BatchNorm2d(2).train()
        >>> with running_stats_kept(bn):
        ...     _ = bn(torch.randn(4, 2, 3, 3) + 5)
        >>> bn.running_mean.tolist(), int(bn.num_batches_tracked)
        ([0.0, 0.0], 0)
    """
    norms = [m for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in norms]
    try:
        yield
    finally:
        for norm, mean, var, count in saved:
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
            norm.num_batches_tracked.copy_(count)
