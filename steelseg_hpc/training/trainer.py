"""The training loop of one run: :class:`Trainer` builds it, :meth:`Trainer.fit` runs its epochs.

:func:`~steelseg_hpc.training.api.train` (validation, the run lock, the run's log) is the public
entry; a :class:`Trainer` is the part it drives: resume from the latest checkpoint, train and
validate each epoch, write its ``metrics.jsonl`` row and checkpoint, and stop on ``epochs``,
``patience``, the time budget or a stop request. Hooks see each optimiser step
(``on_step_end``) and each finished epoch's row (``on_epoch_end``).

Example:
    >>> trainer = Trainer.setup(config, run, env, store, base=base, identity=identity)  # doctest: +SKIP
    >>> trainer.on_epoch_end.append(lambda trainer, row: print(row.epoch, row.val_dice))  # doctest: +SKIP
    >>> summary = trainer.fit()  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from steelseg_hpc.core.errors import TrainingError
from steelseg_hpc.core.rundir import (
    STOPPED_ON_BUDGET,
    STOPPED_ON_PATIENCE,
    STOPPED_ON_REQUEST,
    TILES_POINT,
    FinalSummary,
    MetricsRow,
)
from steelseg_hpc.models import architecture
from steelseg_hpc.models.metrics import SegmentationMetrics
from steelseg_hpc.training.checkpoints import CheckpointManager
from steelseg_hpc.training.config import RunConfig
from steelseg_hpc.training.data_loading import Loaders, build_loaders
from steelseg_hpc.training.distributed import DistEnv, barrier, broadcast, device_for, mean_across_ranks, on_main
from steelseg_hpc.training.engine import build_engine
from steelseg_hpc.training.epoch_state import EpochStopped
from steelseg_hpc.training.host_facts import host_info, peak_memory_mb, reset_peak_memory
from steelseg_hpc.training.loop import train_one_epoch, validate
from steelseg_hpc.training.noise_scale import GradientNoiseScale
from steelseg_hpc.training.precision import PrecisionChoice, resolve_precision
from steelseg_hpc.training.preemption import STOP_FILE, StopRequest, TrainingPreempted
from steelseg_hpc.training.progress import EpochProgress
from steelseg_hpc.training.resume import unresumable_history
from steelseg_hpc.training.run_writer import RunWriter
from steelseg_hpc.training.train_state import TrainState, load_latest, save_epoch_end, save_mid_epoch
from steelseg_hpc.training.weights import WeightsMeta

log = logging.getLogger(__name__)

#: ``hook(trainer, loss)`` after each optimiser step (``trainer.engine.global_steps`` is its number).
StepHook = Callable[["Trainer", float], None]
#: ``hook(trainer, row)`` after each finished epoch's row and checkpoint are written.
EpochHook = Callable[["Trainer", MetricsRow], None]


@dataclass(frozen=True)
class TrainerHooks:
    """Hooks to add to the :class:`Trainer` that :func:`~steelseg_hpc.training.api.train` builds.

    Example:
        >>> steps = []
        >>> hooks = TrainerHooks(on_step_end=(lambda trainer, loss: steps.append(loss),))
    """

    on_step_end: tuple[StepHook, ...] = ()
    on_epoch_end: tuple[EpochHook, ...] = ()

    def install(self, trainer: "Trainer") -> None:
        trainer.on_step_end.extend(self.on_step_end)
        trainer.on_epoch_end.extend(self.on_epoch_end)


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def noise_estimator(config: RunConfig, world_size: int) -> GradientNoiseScale | None:
    """The gradient noise scale estimator of a run, or None where it is off or cannot measure.

    It needs two batch sizes (``grad_accumulation`` > 1 or several ranks) and ZeRO stage < 3
    (stage 3 partitions the gradients the small-batch probe reads).
    """
    small = config.micro_batch
    big = config.micro_batch * config.grad_accumulation * world_size
    if not config.noise_scale.enabled or big == small or config.zero_stage == 3:
        if config.noise_scale.enabled:
            log.info("gradient noise scale off: needs two batch sizes (grad_accumulation > 1 or several "
                     "ranks) and ZeRO stage < 3")
        return None
    return GradientNoiseScale(small, big, config.noise_scale.ema_decay)


def _numel(parameter) -> int:
    return getattr(parameter, "ds_numel", parameter.numel())  # ZeRO-3 partitions parameters


def _check_history(run: RunWriter, checkpoints: CheckpointManager, restart: bool) -> None:
    """A run with a history must resume from an intact checkpoint, never start a second history.

    With ``restart``, a history that cannot be resumed is moved aside and the run starts over.
    """
    rows = run.read_metrics()
    problem = unresumable_history(run.path, rows, checkpoints)
    if problem is None:
        if rows and not checkpoints.any_saved():
            # A crash between epoch 1's metrics row and its checkpoint: start that epoch again.
            run.truncate_metrics(0)
        return
    if not restart:
        raise TrainingError(problem)
    aside = run.move_aside("damaged")
    log.warning("%s: no intact checkpoint; moved its files to %s and started over", run.path, aside)


class Trainer:
    """The engine, data and checkpoints of one run, and the loop over its epochs.

    Build it with :meth:`setup`; every rank of the job builds one and calls :meth:`fit`.

    Attributes:
        on_step_end: Hooks called after each optimiser step, as ``hook(trainer, loss)``.
        on_epoch_end: Hooks called after each finished epoch, as ``hook(trainer, row)``.
        state: The run's :class:`~steelseg_hpc.training.train_state.TrainState` (set by :meth:`fit`).
    """

    def __init__(self, *, config: RunConfig, run: RunWriter, env: DistEnv, device: torch.device,
                 loaders: Loaders, engine, checkpoints: CheckpointManager, precision: PrecisionChoice,
                 weights_meta: WeightsMeta, changes: dict | None = None, stop: StopRequest | None = None):
        self.config, self.run, self.env, self.device = config, run, env, device
        self.loaders, self.engine, self.checkpoints = loaders, engine, checkpoints
        self.precision, self.weights_meta = precision, weights_meta
        self.changes = changes or {}
        self.stop = stop
        self.on_step_end: list[StepHook] = []
        self.on_epoch_end: list[EpochHook] = []
        self.state = TrainState()
        self.noise: GradientNoiseScale | None = None

    @classmethod
    def setup(cls, config: RunConfig, run: RunWriter, env: DistEnv, store, *, base: dict, identity: dict,
              changes: dict | None = None, restart: bool = False, stop: StopRequest | None = None,
              train_set=None, val_set=None) -> "Trainer":
        """Validate everything that can fail, then write the run directory (collective).

        Args:
            config: The resolved run configuration.
            run: The run directory (written only once the engine is built).
            env: This rank's place in the job.
            store: The opened store the run trains on.
            base: The model's base identity, recorded in ``run.json``.
            identity: The store's identity, recorded in ``run.json``.
            changes: ``{key: (old, new)}`` of an extended run (raised ``epochs`` or ``patience``).
            restart: Move a history without an intact checkpoint aside instead of refusing it.
            stop: An installed stop request, checked before every optimiser step.
            train_set, val_set: Datasets to train and validate on instead of the store's splits
                (``benchmarks/gpu.py`` times the engine on tiles already on the GPU).
        """
        arch = architecture(config.model.name)
        device = device_for(env)
        precision = resolve_precision(config.precision, device.type)
        loaders = build_loaders(config, env.rank, env.world_size, train_set=train_set, val_set=val_set)
        engine, step = build_engine(config, env, store.num_classes, loaders.steps_per_epoch, precision.resolved)
        parameters = list(step.model.parameters())
        checkpoints = CheckpointManager(run.checkpoints, keep=config.keep_checkpoints,
                                        is_main=env.is_main, barrier=barrier)
        on_main(env, lambda: _check_history(run, checkpoints, restart))
        if env.is_main:
            run.initialise(config, {"host": host_info(env.world_size), **precision.as_dict()})
            run.update_run_info(store=identity, model={
                "arch": arch.name, "base": base, "total_params": sum(_numel(p) for p in parameters),
                "trainable_params": sum(_numel(p) for p in parameters if p.requires_grad)})
            if changes and run.files.final.exists():
                run.files.final.unlink()  # the run is going again: not finished any more
        barrier()
        weights_meta = WeightsMeta(arch=arch.name, options=config.model.options(),
                                   num_classes=store.num_classes, class_names=store.class_names,
                                   kind=arch.checkpoint, base=base, seed=config.seed)
        return cls(config=config, run=run, env=env, device=device, loaders=loaders, engine=engine,
                   checkpoints=checkpoints, precision=precision, weights_meta=weights_meta,
                   changes=changes, stop=stop)

    def fit(self) -> FinalSummary:
        """Resume, train the remaining epochs, write ``final.json`` and return its summary."""
        config, env = self.config, self.env
        self.metrics = SegmentationMetrics(self.weights_meta.num_classes, self.weights_meta.class_names).to(self.device)
        self.point_metrics = SegmentationMetrics(self.weights_meta.num_classes,
                                                 self.weights_meta.class_names).to(self.device)
        self.noise = noise_estimator(config, env.world_size)
        self.state = state = load_latest(self.engine, self.checkpoints, self.run, env, self.noise,
                                         self.weights_meta.kind)
        # A resumed mid-epoch's own seconds travel in its epoch state.
        state.trained_seconds = broadcast(sum(row.train_seconds or 0.0 for row in self.run.read_metrics())
                                          if env.is_main else None)
        self.compile_pending = config.compile  # the first step this process trains compiles the model
        with EpochProgress(enabled=config.progress and env.is_main) as self.progress:
            self._announce()
            for epoch in range(state.epoch + 1, config.epochs + 1):
                if self.budget is not None and state.trained_seconds >= self.budget:
                    state.stop_reason = STOPPED_ON_BUDGET
                    self._note_budget(state.epoch)
                    break
                if not self._epoch(epoch):
                    break
        return self._finish()

    @property
    def budget(self) -> float | None:
        """The run's time budget in training seconds (None: no budget)."""
        return self.config.time_budget_s or None

    def _announce(self) -> None:
        config, env, state, budget = self.config, self.env, self.state, self.budget
        start = (f"{config.model.name} on {config.data.store}: {env.world_size} rank(s), "
                 f"{self.loaders.steps_per_epoch} steps/epoch, ZeRO-{config.zero_stage}, "
                 f"{self.precision.resolved} ({self.precision.reason})"
                 + (f", time budget {budget:g} s of training ({state.trained_seconds:.0f} s used)" if budget else ""))
        log.info("training %s", start)
        self.progress.note(f"training {start}")
        if state.resumed_from is not None:
            self.progress.note(f"resuming from checkpoint {state.resumed_from}")
        if self.changes and state.resumed_from is not None:
            last = self.run.read_metrics()
            message = self._explain_extension(last[-1].lr if last else None)
            log.info("%s", message)
            self.progress.note(message)

    def _step_end(self, loss: float) -> None:
        self._validate_at_tiles()
        for hook in self.on_step_end:
            hook(self, loss)

    def _validate_at_tiles(self) -> None:
        """Validate where the tiles trained pass a multiple of ``val_every_tiles`` (collective).

        The points fall at the same numbers of tiles whatever the batch size, so steps- and
        tiles-to-target compare across a batch sweep. An epoch's last step is left to the epoch's
        own row (the same model, validated once). Validation has its own metrics, so the epoch's
        running training figures are untouched; the model goes back to training mode after.
        """
        every, engine = self.config.val_every_tiles, self.engine
        if not every:
            return
        global_batch = self.config.micro_batch * self.config.grad_accumulation * self.env.world_size
        tiles = engine.global_steps * global_batch
        if tiles // every == (tiles - global_batch) // every or engine.global_steps % self.loaders.steps_per_epoch == 0:
            return
        stats = broadcast(validate(engine, self.loaders, self.point_metrics, self.device))
        engine.train()
        row = MetricsRow(epoch=self.state.epoch + 1, step=engine.global_steps, point=TILES_POINT,
                         lr=float(engine.get_lr()[0]), world_size=self.env.world_size, global_batch=global_batch,
                         tiles_trained=tiles, **stats)
        if self.env.is_main:
            self.run.append_metrics(row)

    def _epoch(self, epoch: int) -> bool:
        """Train, validate, record and checkpoint ``epoch``; whether the run goes on."""
        config, env, state, budget = self.config, self.env, self.state, self.budget
        torch.manual_seed(config.seed + 1000 * epoch + env.rank)
        reset_peak_memory()
        epoch_start = time.perf_counter()
        resumed, state.resume_epoch = state.resume_epoch, None  # only the first epoch
        earlier_seconds = resumed.epoch_seconds if resumed else 0.0
        try:
            stats = train_one_epoch(self.engine, self.loaders, epoch, self.metrics, self.device, self.noise,
                                    self.progress, env.world_size, stop=self.stop, resume=resumed,
                                    epochs=config.epochs,
                                    budget_s=None if budget is None else budget - state.trained_seconds,
                                    exclude_first_step=self.compile_pending,
                                    on_step_end=self._step_end if self.on_step_end or config.val_every_tiles
                                    else None)
        except EpochStopped as stopped:
            if stopped.signal_number == STOP_FILE:
                # Asked to end (a sweep pruned the run): no requeue, the epoch is not finished.
                state.stop_reason = STOPPED_ON_REQUEST
                log.info("stopping in epoch %d: %s exists", epoch, self.run.files.stop_request)
                self.progress.note(f"stopping in epoch {epoch}: a stop was requested ({self.run.files.stop_request})")
                return False
            # Nothing new since the last checkpoint (stop at an epoch's first step): keep it.
            tag = self.checkpoints.latest_tag() if env.is_main else None
            if stopped.trained:
                stopped.state.epoch_seconds = earlier_seconds + time.perf_counter() - epoch_start
                tag = save_mid_epoch(self.checkpoints, self.engine, env, state, stopped.state, self.noise,
                                     self.weights_meta)
            raise TrainingPreempted(tag, epoch, stopped.state.micro_batches, stopped.signal_number) from None
        self.compile_pending = False
        cut_short = stats.pop("budget_reached")
        stats.update(validate(self.engine, self.loaders, self.metrics, self.device))
        # Every rank must take the same best/patience decisions: rank 0's figures are the record.
        stats = broadcast(stats)
        state.trained_seconds += stats["train_seconds"]
        improved = state.record(epoch, stats["val_dice"])
        # The row is on disk before the checkpoint becomes `latest`: a crash between the two
        # resumes from the previous checkpoint, which drops this row and trains the epoch again.
        state.last_row = row = self._metrics_row(epoch, stats, earlier_seconds + time.perf_counter() - epoch_start)
        if env.is_main:
            self.run.append_metrics(row)
        save_epoch_end(self.checkpoints, self.engine, env, state, stats["val_dice"], self.noise, self.weights_meta)
        line = self._epoch_line(row, improved)
        log.info("%s", line)
        self.progress.end_epoch(line)
        for hook in self.on_epoch_end:
            hook(self, row)
        if cut_short:
            state.stop_reason = STOPPED_ON_BUDGET
            self._note_budget(epoch)
            return False
        if config.patience and state.bad_epochs >= config.patience:
            state.stop_reason = STOPPED_ON_PATIENCE
            log.info("stopping: val Dice did not improve for %d epochs", config.patience)
            self.progress.note(f"stopping early: val Dice did not improve for {config.patience} epochs")
            return False
        return True

    def _finish(self) -> FinalSummary:
        state, env = self.state, self.env
        last_row = state.last_row
        if last_row is None:
            rows = self.run.read_metrics()
            last_row = rows[-1] if rows else None
        summary = FinalSummary(
            run_dir=str(self.run.path), stopped=state.stop_reason, epochs_completed=state.epoch,
            epochs_planned=self.config.epochs, best_epoch=state.best_epoch, best_val_dice=state.best_score,
            best_checkpoint=self.checkpoints.best_tag() if env.is_main else None,
            last=last_row.to_dict() if last_row is not None else None,
        )
        if env.is_main:
            self.run.write_final(summary)
        barrier()
        return summary

    def _metrics_row(self, epoch: int, stats: dict, epoch_seconds: float) -> MetricsRow:
        """One ``metrics.jsonl`` line (collective: every rank must call it)."""
        config, engine, env = self.config, self.engine, self.env
        estimates = self.noise.estimates() if self.noise is not None else None
        # Each rank's small-batch norms differ, so the EMAs are averaged over ranks before dividing.
        g2, trace = mean_across_ranks(list(estimates), self.device) if estimates else (None, None)
        (peak,) = mean_across_ranks([peak_memory_mb()], self.device)
        global_batch = config.micro_batch * config.grad_accumulation * env.world_size
        return MetricsRow(
            epoch=epoch, step=engine.global_steps, **stats,
            lr=float(engine.get_lr()[0]), epoch_seconds=epoch_seconds, peak_memory_mb=peak,
            noise_scale_b_simple=trace / g2 if g2 and g2 > 0 else None,
            noise_scale_g2=g2, noise_scale_trace=trace, world_size=env.world_size,
            global_batch=global_batch, tiles_trained=engine.global_steps * global_batch,
        )

    def _explain_extension(self, last_lr: float | None) -> str:
        """Re-apply the learning rate on the stretched schedule and say what changed."""
        scheduler, steps_per_epoch = self.engine.lr_scheduler, self.loaders.steps_per_epoch
        # The optimizer still holds the old schedule's rate for the next step: set the new one now.
        scheduler.step(scheduler.last_batch_iteration)
        parts = [f"{key} {old} -> {new}" for key, (old, new) in self.changes.items()]
        message = f"extending the run ({', '.join(parts)})"
        if "epochs" in self.changes:
            old_end = steps_per_epoch * self.changes["epochs"][0]
            message += (f"; the cosine schedule now ends at step {steps_per_epoch * self.config.epochs} instead "
                        f"of {old_end}, so the learning rate continues at {scheduler.get_lr()[0]:.3g} "
                        f"(step {scheduler.last_batch_iteration}) instead of {_fmt(last_lr, '.3g')}")
        return message

    def _note_budget(self, epoch: int) -> None:
        message = f"stopping after epoch {epoch}: the time budget of {self.budget:g} s of training is used"
        log.info("%s", message)
        self.progress.note(message)

    def _epoch_line(self, row: MetricsRow, improved: bool) -> str:
        return (f"epoch {row.epoch}/{self.config.epochs}  loss {_fmt(row.train_loss)}  val Dice {_fmt(row.val_dice)}"
                f"{' (best)' if improved else ''}  mIoU {_fmt(row.val_miou)}  {_fmt(row.tiles_per_s, '.1f')} tiles/s"
                f"  {_fmt(row.epoch_seconds, '.0f')} s  B_simple {_fmt(row.noise_scale_b_simple, '.1f')}")
