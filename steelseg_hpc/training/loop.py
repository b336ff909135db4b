"""One training epoch and one validation pass over a DeepSpeed engine.

The epoch runs exactly ``micro_batches_per_epoch`` micro-batches (a multiple of the accumulation
steps), so optimiser steps never straddle epochs and a resumed run replays the same steps. A
non-finite loss on any rank stops every rank at the next optimiser-step boundary, before the
update, with a :class:`~steelseg_hpc.core.errors.TrainingError`.

Before each optimiser step (so never inside a gradient-accumulation cycle) the loop asks whether
any rank received a stop signal (:class:`~steelseg_hpc.training.preemption.StopRequest`); if so
every rank raises :class:`~steelseg_hpc.training.epoch_state.EpochStopped` with its running
state, which the caller saves as a mid-epoch checkpoint. ``resume`` continues such an epoch.
At the same boundary, and in the same all-reduce, it asks whether any rank has used up the
epoch's share of a time budget; then the epoch ends there, short, and says so
(``budget_reached``).

The first optimiser step after ``torch.compile`` compiles the model: with
``exclude_first_step`` its seconds are reported as ``compile_seconds`` and left out of
``tiles_per_s`` (they stay in ``train_seconds``, which is what a time budget counts).

Example:
    >>> stats = train_one_epoch(engine, loaders, epoch=1, ...)  # doctest: +SKIP
    >>> stats["train_loss"], stats["tiles_per_s"]  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from steelseg_hpc.core.errors import TrainingError
from steelseg_hpc.training.data_loading import Loaders, batches_of
from steelseg_hpc.training.distributed import any_rank, average_batchnorm_statistics, mean_across_ranks, several_ranks
from steelseg_hpc.training.epoch_state import EpochState, EpochStopped, capture_rng, restore_rng
from steelseg_hpc.training.noise_scale import GradientNoiseScale, MicroBatchGradProbe, grad_sq_norm
from steelseg_hpc.training.preemption import StopRequest
from steelseg_hpc.training.progress import EpochProgress

log = logging.getLogger(__name__)

METRIC_NAMES = {"pixel_accuracy": "pixel_accuracy", "dice_macro": "dice", "miou": "miou"}


def _to_device(batch, device: torch.device):
    images, masks = batch
    non_blocking = device.type == "cuda"
    return images.to(device, non_blocking=non_blocking), masks.to(device, non_blocking=non_blocking)


def summarise_metrics(values: dict[str, Any], prefix: str) -> dict[str, float]:
    """Pick pixel accuracy, macro Dice and mIoU from ``SegmentationMetrics.compute()``.

    A figure is None when no class occurs at all (an empty split).
    """
    return {f"{prefix}_{short}": None if values.get(key) is None else float(values[key])
            for key, short in METRIC_NAMES.items()}


def _boundary_poll(stop: StopRequest | None, over_budget: bool, device: torch.device) -> tuple[int, bool]:
    """Whether any rank received a stop signal (its number, else 0) or is over its time budget.

    One tiny all-reduce(MAX) answers both, so every rank learns the same, also those the signal
    did not reach or whose clock is a little behind, and all react at the same step.
    """
    received = stop.poll() if stop is not None else 0
    if not several_ranks():
        return received, over_budget
    tensor = torch.tensor([float(received), 1.0 if over_budget else 0.0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor[0].item()), bool(tensor[1].item() > 0)


def train_one_epoch(engine, loaders: Loaders, epoch: int, metrics, device: torch.device,
                    noise: GradientNoiseScale | None, progress: EpochProgress,
                    world_size: int, stop: StopRequest | None = None,
                    resume: EpochState | None = None, epochs: int | None = None,
                    budget_s: float | None = None, exclude_first_step: bool = False,
                    on_step_end: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Train for one epoch; returns loss, train metrics, tiles/s and the step count.

    Args:
        stop: Checked (on every rank, collectively) before each optimiser step.
        resume: The state of this epoch saved by an interrupted run: its micro-batches are
            skipped and its running sums, train confusion counts and RNG states restored.
        epochs: The run's number of epochs (for the progress bar).
        budget_s: Training seconds this epoch may use (counting those of ``resume``); checked
            before each optimiser step after the first. None: no budget.
        exclude_first_step: Time the first optimiser step separately (``compile_seconds``) and
            leave it out of ``tiles_per_s``.
        on_step_end: Called with the last micro-batch's loss after each optimiser step.

    Returns:
        ``train_loss``, ``train_pixel_accuracy``, ``train_dice``, ``train_miou``,
        ``train_seconds``, ``tiles_per_s``, ``compile_seconds`` (None unless excluded) and
        ``budget_reached`` (the epoch ended early on the time budget).

    Raises:
        EpochStopped: ``stop`` was requested on some rank (raised on every rank, at the same step).
        TrainingError: a non-finite loss.
    """
    engine.train()
    metrics.reset()
    state = resume if resume is not None else EpochState(epoch=epoch)
    if resume is not None:
        if resume.confusion is not None:
            metrics.load_running_state(resume.confusion)
        if resume.rng is not None:
            restore_rng(resume.rng)
    loaders.train_sampler.set_epoch(epoch, skip=state.micro_batches * loaders.train.batch_size)
    accumulation = engine.gradient_accumulation_steps()
    probe = MicroBatchGradProbe(engine.module.parameters()) if noise is not None else None
    zero_stage = engine.zero_optimization_stage()
    loss_sum = torch.tensor(state.loss_sum, dtype=torch.float64)
    micro_steps, bad_loss, small_norms = state.micro_batches, False, []
    first_micro_step = micro_steps
    progress.start_epoch(epoch, epochs or epoch, total=loaders.steps_per_epoch,
                         completed=micro_steps // accumulation)
    tiles_per_step = engine.train_micro_batch_size_per_gpu() * accumulation * world_size
    start = time.perf_counter()
    first_step_end, first_step_micro, budget_reached = None, micro_steps, False
    batches = batches_of(loaders.train)
    try:
        while micro_steps < loaders.micro_batches_per_epoch:
            # Between optimiser steps nothing is half-accumulated, so this is where a stop loses
            # no work; checking before fetching the batch also avoids loading one in vain.
            signal_number, over_budget = 0, False
            if micro_steps % accumulation == 0 and (stop is not None or budget_s is not None):
                # Not before the epoch's first step: the caller starts no epoch without budget left.
                over_budget = (budget_s is not None and micro_steps > first_micro_step
                               and state.train_seconds + time.perf_counter() - start >= budget_s)
                signal_number, over_budget = _boundary_poll(stop, over_budget, device)
            if over_budget and not signal_number:
                budget_reached = True
                break
            if signal_number:
                state.micro_batches, state.loss_sum = micro_steps, float(loss_sum)
                state.train_seconds += time.perf_counter() - start
                state.confusion = metrics.running_state()
                state.noise_scale = noise.state_dict() if noise is not None else None
                state.rng = capture_rng()
                raise EpochStopped(state, trained=micro_steps > first_micro_step, signal_number=signal_number)
            batch = next(batches, None)
            if batch is None:  # fewer batches than planned: cannot happen with drop_last samplers
                break
            images, masks = _to_device(batch, device)
            loss, logits = engine(images, masks)
            loss_value = float(loss.detach())
            bad_loss |= not torch.isfinite(loss.detach()).item()
            engine.backward(loss)
            if probe is not None:
                small = probe.pop(loss_scale=1.0 / accumulation)
                if small is not None:
                    small_norms.append(small)
            boundary = engine.is_gradient_accumulation_boundary()
            if boundary and any_rank(bad_loss, device):
                raise TrainingError(
                    f"non-finite training loss in epoch {epoch} (step {engine.global_steps + 1}); "
                    "the run stopped before applying it and the best checkpoint is untouched. "
                    "Lower optimizer.lr, enable grad_clip, or check the data"
                )
            big = grad_sq_norm(engine.module.parameters()) if boundary and zero_stage == 0 else None
            engine.step()
            loss_sum += loss_value
            micro_steps += 1
            metrics.update(logits.argmax(dim=1), masks)
            if boundary:
                if noise is not None and small_norms:
                    if big is None and engine.get_global_grad_norm() is not None:
                        big = float(engine.get_global_grad_norm()) ** 2
                    if big is not None:
                        noise.update(sum(small_norms) / len(small_norms), big)
                    small_norms = []
                if exclude_first_step and first_step_end is None:
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)  # its queued kernels belong to the excluded step
                    first_step_end, first_step_micro = time.perf_counter(), micro_steps
                progress.advance(loss_value, tiles=tiles_per_step)
                if on_step_end is not None:
                    on_step_end(loss_value)
    finally:
        if probe is not None:
            probe.remove()
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the last step's kernels belong to this epoch's seconds
    end = time.perf_counter()
    seconds = state.train_seconds + end - start
    (mean_loss,) = mean_across_ranks([float(loss_sum) / max(micro_steps, 1)], device)
    tiles_per_micro_batch = engine.train_micro_batch_size_per_gpu() * world_size
    compile_seconds = None
    if first_step_end is not None and micro_steps > first_step_micro:
        compile_seconds = first_step_end - start
        tiles_per_s = (micro_steps - first_step_micro) * tiles_per_micro_batch / (end - first_step_end)
    else:  # nothing excluded, or nothing after the excluded step to measure
        tiles_per_s = micro_steps * tiles_per_micro_batch / seconds
    result = {
        "train_loss": mean_loss,
        **summarise_metrics(metrics.compute(), "train"),
        "train_seconds": seconds,
        "tiles_per_s": tiles_per_s,
        "compile_seconds": compile_seconds,
        "budget_reached": budget_reached,
    }
    return result


@torch.no_grad()
def validate(engine, loaders: Loaders, metrics, device: torch.device) -> dict[str, float]:
    """Loss and metrics on the validation tiles (every rank its shard; metrics synchronised)."""
    average_batchnorm_statistics(engine.module)
    engine.eval()
    metrics.reset()
    loss_sum, tiles = 0.0, 0
    for batch in batches_of(loaders.val):
        images, masks = _to_device(batch, device)
        loss, logits = engine(images, masks)
        loss_sum += float(loss) * images.shape[0]
        tiles += images.shape[0]
        metrics.update(logits.argmax(dim=1), masks)
    total_loss, total_tiles = mean_across_ranks([loss_sum, float(tiles)], device)
    return {"val_loss": total_loss / max(total_tiles, 1.0), **summarise_metrics(metrics.compute(), "val")}
