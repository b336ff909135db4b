"""One rank's running state of the epoch in progress: what a mid-epoch checkpoint must keep.

An epoch's ``metrics.jsonl`` line is built from running sums (loss, the train confusion matrix,
time) that differ per rank, so each rank writes its own ``epoch_state_rankNNNN.pt`` into the
mid-epoch checkpoint folder, beside DeepSpeed's files (whose client state only rank 0 writes).
Restoring it, and skipping the micro-batches already trained, makes the resumed epoch's line the
same as an uninterrupted run's.

Example:
    >>> state = EpochState(epoch=2, micro_batches=4, loss_sum=3.2)
    >>> state.micro_batches
    4
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _state_file(folder: Path, rank: int) -> Path:
    return Path(folder) / f"epoch_state_rank{rank:04d}.pt"


def capture_rng() -> dict[str, Any]:
    """The random generators a training step may draw from (dropout, models' own sampling)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class EpochState:
    """One rank's progress through ``epoch`` and its running sums.

    Attributes:
        epoch: The epoch in progress.
        micro_batches: Micro-batches of the epoch trained so far (a multiple of the accumulation
            steps whenever saved: the loop stops only at optimiser-step boundaries).
        loss_sum: Sum of this rank's micro-batch losses.
        train_seconds: Training time of the epoch in earlier sessions (for ``tiles_per_s``).
        epoch_seconds: Wall time of the epoch in earlier sessions (for ``epoch_seconds``).
        confusion: This rank's train confusion counts (``SegmentationMetrics.running_state``).
        noise_scale: This rank's noise-scale EMAs (they differ per rank).
        rng: The random generators' states at the save.
    """

    epoch: int
    micro_batches: int = 0
    loss_sum: float = 0.0
    train_seconds: float = 0.0
    epoch_seconds: float = 0.0
    confusion: dict[str, torch.Tensor] | None = None
    noise_scale: dict[str, float] | None = None
    rng: dict[str, Any] | None = field(default=None, repr=False)

    def save(self, folder: Path, rank: int) -> None:
        torch.save(asdict(self), _state_file(folder, rank))

    @classmethod
    def load(cls, folder: Path, rank: int) -> "EpochState":
        """Read this rank's state; raises FileNotFoundError when the checkpoint has none for it."""
        return cls(**torch.load(_state_file(folder, rank), map_location="cpu", weights_only=False))


class EpochStopped(Exception):
    """Raised by the training loop at a step boundary when a stop was requested.

    Attributes:
        state: The epoch's running state at that boundary.
        trained: Whether this session trained any step since the epoch (re)started, i.e. whether
            there is anything a new checkpoint would add.
        signal_number: The stop signal (received by this rank or another one).
    """

    def __init__(self, state: EpochState, trained: bool, signal_number: int) -> None:
        super().__init__(f"stop requested in epoch {state.epoch} after {state.micro_batches} micro-batches")
        self.state, self.trained, self.signal_number = state, trained, signal_number
