"""What a run carries from epoch to epoch, and how it is saved in and loaded from a checkpoint.

:class:`TrainState` is the bookkeeping of :class:`~steelseg_hpc.training.trainer.Trainer`: the
last finished epoch, the best val Dice so far and its epoch, the epochs since it (for
``patience``), the training seconds used (for ``time_budget_s``) and why the run stopped. Its
first four fields travel in every checkpoint, under the same keys as ever.

Example:
    >>> state = TrainState()
    >>> state.record(epoch=1, score=0.5), state.record(epoch=2, score=0.4)
    (True, False)
    >>> state.best_epoch, state.bad_epochs
    (1, 1)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from steelseg_hpc.core.errors import TrainingError
from steelseg_hpc.core.rundir import STOPPED_COMPLETED, MetricsRow
from steelseg_hpc.training.checkpoints import CheckpointManager
from steelseg_hpc.training.distributed import DistEnv, average_batchnorm_statistics, broadcast
from steelseg_hpc.training.engine import load_engine_checkpoint, save_engine_checkpoint
from steelseg_hpc.training.epoch_state import EpochState
from steelseg_hpc.training.noise_scale import GradientNoiseScale
from steelseg_hpc.training.run_writer import RunWriter
from steelseg_hpc.training.weights import WeightsMeta

log = logging.getLogger(__name__)

#: The fields of :class:`TrainState` a checkpoint holds (its client state's keys).
CHECKPOINT_FIELDS = ("epoch", "best_score", "best_epoch", "bad_epochs")


@dataclass
class TrainState:
    """The run's bookkeeping between epochs.

    Attributes:
        epoch: The last finished epoch (0 before the first).
        best_score: The best val Dice so far (None: no epoch had one).
        best_epoch: The epoch of ``best_score``.
        bad_epochs: Epochs since the best one (``patience`` stops the run at that many).
        resumed_from: The checkpoint tag this process continued from (None: a fresh start).
        resume_epoch: This rank's state of an epoch a mid-epoch checkpoint stopped in; only the
            first epoch trained uses it.
        trained_seconds: Training seconds of the finished epochs: what a time budget has used.
        stop_reason: ``completed``, ``patience``, ``time-budget`` or ``stop-request``.
        last_row: The last ``metrics.jsonl`` row this process wrote.
    """

    epoch: int = 0
    best_score: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    resumed_from: str | None = None
    resume_epoch: EpochState | None = None
    trained_seconds: float = 0.0
    stop_reason: str = STOPPED_COMPLETED
    last_row: MetricsRow | None = None

    def record(self, epoch: int, score: float | None) -> bool:
        """Count finished ``epoch`` with val Dice ``score``; whether it is the best so far."""
        improved = score is not None and (self.best_score is None or score > self.best_score)
        if improved:
            self.best_score, self.best_epoch, self.bad_epochs = score, epoch, 0
        else:
            self.bad_epochs += 1
        self.epoch = epoch
        return improved

    def checkpoint_state(self) -> dict:
        """The fields a checkpoint saves (:data:`CHECKPOINT_FIELDS`)."""
        return {name: getattr(self, name) for name in CHECKPOINT_FIELDS}


def load_latest(engine, checkpoints: CheckpointManager, run: RunWriter, env: DistEnv,
                noise: GradientNoiseScale | None, weights_kind: str) -> TrainState:
    """Load the latest intact checkpoint; the state to continue from (fresh if none)."""
    tag, skipped = broadcast(checkpoints.resume_choice() if env.is_main else None)
    if tag is None:
        return TrainState()
    for damaged in skipped:
        log.warning("checkpoint %s is damaged or incomplete (its files differ from its manifest); "
                    "skipping it", damaged)
    if skipped:
        log.warning("falling back to checkpoint %s", tag)
    load_path, client = load_engine_checkpoint(engine, checkpoints.root, tag, weights_kind)
    if load_path is None:
        raise TrainingError(f"{checkpoints.root / tag}: DeepSpeed could not load this checkpoint")
    if noise is not None and client.get("noise_scale"):
        noise.load_state_dict(client["noise_scale"])
    if env.is_main:
        run.truncate_metrics(client["epoch"], last_step=engine.global_steps)
    # The loaded state also holds DeepSpeed's own keys, which must not be saved back as ours.
    state = TrainState(**{name: client[name] for name in CHECKPOINT_FIELDS}, resumed_from=tag)
    state.resume_epoch = _mid_epoch_state(checkpoints.root / tag, client.get("mid_epoch"), env)
    if state.resume_epoch is None:
        log.info("resumed from checkpoint %s (epoch %d)", tag, client["epoch"])
    else:
        resumed = state.resume_epoch
        if noise is not None and resumed.noise_scale:
            noise.load_state_dict(resumed.noise_scale)  # this rank's own EMAs, not rank 0's
        log.info("resumed from checkpoint %s (epoch %d, after micro-batch %d of it)", tag,
                 resumed.epoch, resumed.micro_batches)
    return state


def _mid_epoch_state(folder: Path, mid_epoch: dict | None, env: DistEnv) -> EpochState | None:
    """This rank's running state saved in a mid-epoch checkpoint (None for an end-of-epoch one)."""
    if not mid_epoch:
        return None
    if mid_epoch["world_size"] != env.world_size:
        # Each rank's share of the epoch's tiles depends on the number of ranks.
        raise TrainingError(
            f"{folder}: this mid-epoch checkpoint was written by {mid_epoch['world_size']} rank(s); "
            f"resume it with the same number (this job has {env.world_size})"
        )
    state = EpochState.load(folder, env.rank)
    if (state.epoch, state.micro_batches) != (mid_epoch["epoch"], mid_epoch["micro_batches"]):
        raise TrainingError(f"{folder}: rank {env.rank}'s epoch state does not match the checkpoint")
    return state


def save_mid_epoch(checkpoints: CheckpointManager, engine, env: DistEnv, state: TrainState,
                   stopped: EpochState, noise: GradientNoiseScale | None, weights_meta: WeightsMeta) -> str:
    """Save a mid-epoch checkpoint on every rank: DeepSpeed state plus each rank's epoch state."""
    average_batchnorm_statistics(engine.module)  # the checkpoint keeps rank 0's module
    mid_epoch = {"epoch": stopped.epoch, "micro_batches": stopped.micro_batches,
                 "world_size": env.world_size}
    client = state.checkpoint_state()
    client.update(noise_scale=noise.state_dict() if noise else None, mid_epoch=mid_epoch)

    def write(folder: Path) -> None:
        save_engine_checkpoint(engine, folder, client, weights_meta, env.is_main)
        stopped.save(folder, env.rank)

    return checkpoints.save(stopped.epoch, None, write_fn=write, micro_batches=stopped.micro_batches)


def save_epoch_end(checkpoints: CheckpointManager, engine, env: DistEnv, state: TrainState,
                   val_dice: float | None, noise: GradientNoiseScale | None, weights_meta: WeightsMeta) -> None:
    """Save the checkpoint of finished epoch ``state.epoch`` on every rank."""
    client = state.checkpoint_state()
    client["noise_scale"] = noise.state_dict() if noise else None
    checkpoints.save(state.epoch, val_dice, extra_meta={"val_dice": val_dice},
                     write_fn=lambda folder: save_engine_checkpoint(engine, folder, client, weights_meta,
                                                                    env.is_main))
