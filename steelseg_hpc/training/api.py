"""The training API: ``train(config, run_dir)`` and ``evaluate_run(run_dir)``.

``train`` runs or resumes one run in this process. Under ``torchrun`` or ``srun`` every rank calls
it with the same arguments; a plain ``python`` process is a one-rank run. Given an installed
:class:`~steelseg_hpc.training.preemption.StopRequest`, a SIGUSR2/SIGTERM makes every rank save a
mid-epoch checkpoint at the next optimiser step and ``train`` raise ``TrainingPreempted``; the
next ``train`` on the same run dir continues that epoch where it stopped. Rerunning a finished run
with a larger ``epochs`` (or ``patience``) extends it from its latest checkpoint.

Example:
    >>> from steelseg_hpc.training import load_run_config, train
    >>> cfg = load_run_config(None, ["model.base_channels=4"], arch="unet3plus",
    ...                       store="store.zarr", epochs=2)  # doctest: +SKIP
    >>> summary = train(cfg, Path("runs/unet-tiny"))  # doctest: +SKIP
    >>> summary.best_val_dice  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from steelseg_hpc.core import rundir
from steelseg_hpc.core.errors import ConfigError, DataError, TrainingError
from steelseg_hpc.core.rundir import STOPPED_ON_BUDGET, STOPPED_ON_REQUEST, FinalSummary, MetricsRow
from steelseg_hpc.data import check_same_store, open_store, store_identity
from steelseg_hpc.models import architecture
from steelseg_hpc.models.metrics import SegmentationMetrics
from steelseg_hpc.training.checkpoints import CheckpointManager
from steelseg_hpc.training.config import RunConfig
from steelseg_hpc.training.data_loading import build_loaders, check_splits
from steelseg_hpc.training.distributed import (DistEnv, barrier, broadcast, device_for, mean_across_ranks,
                                               on_main, setup_distributed)
from steelseg_hpc.training.engine import build_engine, load_engine_checkpoint, save_engine_checkpoint
from steelseg_hpc.training.epoch_state import EpochState, EpochStopped
from steelseg_hpc.training.log_capture import ThirdPartyLogs
from steelseg_hpc.training.loop import train_one_epoch, validate
from steelseg_hpc.training.noise_scale import GradientNoiseScale
from steelseg_hpc.training.precision import PrecisionChoice, resolve_precision
from steelseg_hpc.training.preemption import STOP_FILE, StopRequest, TrainingPreempted
from steelseg_hpc.training.progress import EpochProgress
from steelseg_hpc.training.resume import FINISHED, REFUSED, plan_resume
from steelseg_hpc.training.run_dir import RunDir
from steelseg_hpc.training.run_lock import RunLock
from steelseg_hpc.training.run_info import host_info, peak_memory_mb, reset_peak_memory
from steelseg_hpc.training.weights import WeightsMeta, base_identity, check_same_base

log = logging.getLogger(__name__)

__all__ = ["train", "StopRequest", "TrainingPreempted"]

_STATE_KEYS = ("epoch", "best_score", "best_epoch", "bad_epochs")


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def _noise_estimator(config: RunConfig, world_size: int) -> GradientNoiseScale | None:
    small = config.micro_batch
    big = config.micro_batch * config.grad_accumulation * world_size
    if not config.noise_scale.enabled or big == small or config.zero_stage == 3:
        if config.noise_scale.enabled:
            log.info("gradient noise scale off: needs two batch sizes (grad_accumulation > 1 or several "
                     "ranks) and ZeRO stage < 3")
        return None
    return GradientNoiseScale(small, big, config.noise_scale.ema_decay)


def _resume(engine, checkpoints: CheckpointManager, run: RunDir, env: DistEnv,
            noise: GradientNoiseScale | None, weights_kind: str) -> dict:
    """Load the latest intact checkpoint; the bookkeeping to continue from (fresh if none).

    ``state["resume_epoch"]`` is this rank's :class:`EpochState` when the checkpoint was taken
    mid-epoch, else None.
    """
    fresh = {"epoch": 0, "best_score": None, "best_epoch": None, "bad_epochs": 0, "resume_epoch": None,
             "tag": None}
    tag, skipped = broadcast(checkpoints.resume_choice() if env.is_main else None)
    if tag is None:
        return fresh
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
        run.truncate_metrics(client["epoch"])
    # The loaded state also holds DeepSpeed's own keys, which must not be saved back as ours.
    state = {key: client[key] for key in _STATE_KEYS}
    state["tag"] = tag
    state["resume_epoch"] = _mid_epoch_state(checkpoints.root / tag, client.get("mid_epoch"), env)
    if state["resume_epoch"] is None:
        log.info("resumed from checkpoint %s (epoch %d)", tag, client["epoch"])
    else:
        resumed = state["resume_epoch"]
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


def train(config: RunConfig, run_dir: Path, stop: StopRequest | None = None,
          restart: bool = False) -> FinalSummary:
    """Train (or resume, or extend) one run; every rank of the job calls this.

    Args:
        config: The resolved run configuration (``data.store`` must name a prepared store).
        run_dir: Where the config, logs, metrics and checkpoints go; rerunning with the same
            directory resumes from its latest intact checkpoint (mid-epoch ones included). A
            larger ``epochs`` or ``patience`` than the saved config extends the run.
        stop: An installed stop request, checked before every optimiser step. When any rank
            has received its signal, every rank saves a mid-epoch checkpoint and this raises
            :class:`TrainingPreempted`. A signal that arrives during the last epoch's
            validation lets the run finish normally.
        restart: Start over when the run directory holds a history but no intact checkpoint
            (its files are moved aside to ``RUN_DIR.damaged-TIMESTAMP``), instead of refusing.

    Returns:
        The summary also written to ``final.json``: epochs run, best epoch and val Dice, the last
        metrics line and why the run stopped (``completed``, ``patience``, ``time-budget``: its
        ``time_budget_s`` of training seconds were used, the last epoch cut short at an
        optimiser step and then validated and checkpointed like any other, or
        ``stop-request``).

    Raises:
        ConfigError: the config differs from the one saved in ``run_dir`` (other than a raised
            ``epochs`` or ``patience``), or ``run_dir`` is not a folder.
        DataError: the store is missing, too small, or not the one the run trained on.
        TrainingError: a non-finite loss, an unloadable or wholly damaged checkpoint history, or
            another process training in ``run_dir``.
        TrainingPreempted: ``stop`` was requested; the checkpoint it names holds all progress.
    """
    if not config.data.store:
        raise DataError("no store given: pass --store STORE.zarr or set data.store")
    run = RunDir(run_dir)
    store = open_store(config.data.store)
    check_splits(store, config)
    plan = plan_resume(run.path, config)
    if plan.kind == REFUSED:
        raise ConfigError(plan.reason)
    if plan.kind == FINISHED and not restart:
        log.warning("%s", plan.reason)
        return plan.final
    changes = plan.changes
    arch = architecture(config.model.name)
    base = base_identity(config.model.name, config.model.options(), config.seed)
    previous = None if restart else rundir.read_run_info(run.path)
    if previous is not None and previous.model.get("base") is not None:
        check_same_base(previous.model["base"], base, str(run.path))
    check_same_store(previous.store if previous is not None else {}, store, str(run.path))
    identity = store_identity(store)
    with ThirdPartyLogs() as third_party:
        env = setup_distributed()
        third_party.take_over("DeepSpeed")  # its logger gets its own handler on import
        stop = stop if stop is not None else StopRequest(signals=())
        if env.is_main:
            stop.watch(run.files.stop_request)
        lock = RunLock(run.path, enabled=env.is_main)
        on_main(env, lock.acquire)
        try:
            return _start(config, run, env, store, arch, base, identity, changes, third_party, stop, restart)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _out_of_memory(exc):
                raise
            raise TrainingError(out_of_memory_advice(config, exc)) from None
        finally:
            lock.release()


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in str(exc)


def out_of_memory_advice(config: RunConfig, exc: BaseException) -> str:
    """One line for a step that ran out of memory: where, at what batch, and what to change.

    Example:
        >>> from steelseg_hpc.training.config import load_run_config
        >>> config = load_run_config(None, ["micro_batch=8", "grad_accumulation=2"], arch="unet3plus")
        >>> print(out_of_memory_advice(config, torch.OutOfMemoryError("CUDA out of memory.")))  # doctest: +ELLIPSIS
        out of memory at micro_batch 8 (global batch 16 on 1 rank(s)): ... --set micro_batch=4 --set grad_accumulation=4 ...
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    micro, accumulation = config.micro_batch, config.grad_accumulation
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    steps = []
    if micro > 1:
        smaller = max(1, micro // 2)
        steps.append(f"--set micro_batch={smaller} --set grad_accumulation={accumulation * micro // smaller}"
                     " (the same global batch)")
    if not config.model.options().get("activation_checkpointing") and architecture(config.model.name).family != "sam":
        steps.append("--set model.activation_checkpointing=true")
    if config.precision == "fp32":
        steps.append("--set precision=bf16 (where the GPU has it)")
    if config.zero_stage < 3:
        steps.append("--set zero_stage=3")
    return (f"out of memory at micro_batch {micro} (global batch {micro * accumulation * world} on {world} "
            f"rank(s)): {first[:160]}. Checkpoints written so far are intact and the same command resumes; "
            f"first try " + "; or ".join(steps))


def _start(config: RunConfig, run: RunDir, env: DistEnv, store, arch, base: dict, identity: dict,
           changes: dict, third_party: ThirdPartyLogs, stop: StopRequest | None, restart: bool) -> FinalSummary:
    """Validate everything that can fail, then write the run directory, then train."""
    device = device_for(env)
    precision = resolve_precision(config.precision, device.type)
    loaders = build_loaders(config, env.rank, env.world_size)
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
    package_logger = logging.getLogger("steelseg_hpc")
    previous_level = package_logger.level
    handler = run.attach_log() if env.is_main else None
    if handler is not None:
        third_party.write_to(handler)
    try:
        weights_meta = WeightsMeta(arch=arch.name, options=config.model.options(),
                                   num_classes=store.num_classes, class_names=store.class_names,
                                   kind=arch.checkpoint, base=base, seed=config.seed)
        return _run(config, run, env, device, loaders, engine, checkpoints, precision, weights_meta,
                    changes, stop)
    except TrainingError as exc:
        log.info("failed: %s", exc)  # for train.log; the caller shows the error itself
        raise
    except TrainingPreempted as exc:
        log.info("%s", exc)
        raise
    finally:
        if handler is not None:
            package_logger.removeHandler(handler)
            package_logger.setLevel(previous_level)
            handler.close()


def _numel(parameter) -> int:
    return getattr(parameter, "ds_numel", parameter.numel())  # ZeRO-3 partitions parameters


def _check_history(run: RunDir, checkpoints: CheckpointManager, restart: bool) -> None:
    """A run with a history must resume from an intact checkpoint, never start a second history.

    With ``restart``, a history that cannot be resumed is moved aside and the run starts over.
    """
    rows = run.read_metrics()
    if checkpoints.resume_tag() is not None or not (rows or checkpoints.any_saved()):
        return
    if not checkpoints.any_saved() and max(row.epoch for row in rows) <= 1:
        # A crash between epoch 1's metrics row and its checkpoint: start that epoch again.
        run.truncate_metrics(0)
        return
    if not restart:
        damaged = checkpoints.complete_tags()
        what = (f"all {len(damaged)} checkpoint(s) ({', '.join(damaged)}) are damaged" if damaged
                else "its checkpoints are gone")
        raise TrainingError(
            f"{run.path} has {len(rows)} trained epoch(s) in {run.files.metrics.name} but {what}, so there "
            "is nothing to resume from; rerun with --restart to move its files aside and start over")
    aside = run.move_aside("damaged")
    log.warning("%s: no intact checkpoint; moved its files to %s and started over", run.path, aside)


def _metrics_row(config: RunConfig, engine, env: DistEnv, device: torch.device, epoch: int,
                 stats: dict, noise: GradientNoiseScale | None, epoch_seconds: float) -> MetricsRow:
    """One ``metrics.jsonl`` line (collective: every rank must call it)."""
    estimates = noise.estimates() if noise is not None else None
    # Each rank's small-batch norms differ, so the EMAs are averaged over ranks before dividing.
    g2, trace = mean_across_ranks(list(estimates), device) if estimates else (None, None)
    (peak,) = mean_across_ranks([peak_memory_mb()], device)
    global_batch = config.micro_batch * config.grad_accumulation * env.world_size
    return MetricsRow(
        epoch=epoch, step=engine.global_steps, **stats,
        lr=float(engine.get_lr()[0]), epoch_seconds=epoch_seconds, peak_memory_mb=peak,
        noise_scale_b_simple=trace / g2 if g2 and g2 > 0 else None,
        noise_scale_g2=g2, noise_scale_trace=trace, world_size=env.world_size,
        global_batch=global_batch, tiles_trained=engine.global_steps * global_batch,
    )


def _save_mid_epoch(checkpoints: CheckpointManager, engine, env: DistEnv, state: dict,
                    stopped: EpochState, noise: GradientNoiseScale | None,
                    weights_meta: WeightsMeta) -> str:
    """Save a mid-epoch checkpoint on every rank: DeepSpeed state plus each rank's epoch state."""
    mid_epoch = {"epoch": stopped.epoch, "micro_batches": stopped.micro_batches,
                 "world_size": env.world_size}
    client = {key: state[key] for key in _STATE_KEYS}
    client.update(noise_scale=noise.state_dict() if noise else None, mid_epoch=mid_epoch)

    def write(folder: Path) -> None:
        save_engine_checkpoint(engine, folder, client, weights_meta, env.is_main)
        stopped.save(folder, env.rank)

    return checkpoints.save(stopped.epoch, None, write_fn=write, micro_batches=stopped.micro_batches)


def _explain_extension(engine, config: RunConfig, changes: dict, steps_per_epoch: int,
                       last_lr: float | None) -> str:
    """Re-apply the learning rate on the stretched schedule and say what changed."""
    scheduler = engine.lr_scheduler
    # The optimizer still holds the old schedule's rate for the next step: set the new one now.
    scheduler.step(scheduler.last_batch_iteration)
    parts = [f"{key} {old} -> {new}" for key, (old, new) in changes.items()]
    message = f"extending the run ({', '.join(parts)})"
    if "epochs" in changes:
        old_end = steps_per_epoch * changes["epochs"][0]
        message += (f"; the cosine schedule now ends at step {steps_per_epoch * config.epochs} instead "
                    f"of {old_end}, so the learning rate continues at {scheduler.get_lr()[0]:.3g} "
                    f"(step {scheduler.last_batch_iteration}) instead of {_fmt(last_lr, '.3g')}")
    return message


def _note_budget(progress: EpochProgress, budget: float, epoch: int) -> None:
    message = f"stopping after epoch {epoch}: the time budget of {budget:g} s of training is used"
    log.info("%s", message)
    progress.note(message)


def _epoch_line(config: RunConfig, row: MetricsRow, improved: bool) -> str:
    return (f"epoch {row.epoch}/{config.epochs}  loss {_fmt(row.train_loss)}  val Dice {_fmt(row.val_dice)}"
            f"{' (best)' if improved else ''}  mIoU {_fmt(row.val_miou)}  {_fmt(row.tiles_per_s, '.1f')} tiles/s"
            f"  {_fmt(row.epoch_seconds, '.0f')} s  B_simple {_fmt(row.noise_scale_b_simple, '.1f')}")


def _run(config: RunConfig, run: RunDir, env: DistEnv, device: torch.device, loaders, engine,
         checkpoints: CheckpointManager, precision: PrecisionChoice, weights_meta: WeightsMeta,
         changes: dict, stop: StopRequest | None = None) -> FinalSummary:
    metrics = SegmentationMetrics(weights_meta.num_classes, weights_meta.class_names).to(device)
    noise = _noise_estimator(config, env.world_size)
    state = _resume(engine, checkpoints, run, env, noise, weights_meta.kind)
    stop_reason, last_row = "completed", None
    # Training seconds of the epochs already finished (the resumed checkpoint's): what a time
    # budget has used. A resumed mid-epoch's own seconds travel in its epoch state.
    trained_seconds = broadcast(sum(row.train_seconds or 0.0 for row in run.read_metrics())
                                 if env.is_main else None)
    budget = config.time_budget_s or None
    compile_pending = config.compile  # the first step this process trains compiles the model
    with EpochProgress(enabled=config.progress and env.is_main) as progress:
        start = (f"{config.model.name} on {config.data.store}: {env.world_size} rank(s), "
                 f"{loaders.steps_per_epoch} steps/epoch, ZeRO-{config.zero_stage}, "
                 f"{precision.resolved} ({precision.reason})"
                 + (f", time budget {budget:g} s of training ({trained_seconds:.0f} s used)" if budget else ""))
        log.info("training %s", start)
        progress.note(f"training {start}")
        if state["tag"] is not None:
            progress.note(f"resuming from checkpoint {state['tag']}")
        if changes and state["tag"] is not None:
            last = run.read_metrics()
            message = _explain_extension(engine, config, changes, loaders.steps_per_epoch,
                                         last[-1].lr if last else None)
            log.info("%s", message)
            progress.note(message)
        for epoch in range(state["epoch"] + 1, config.epochs + 1):
            if budget is not None and trained_seconds >= budget:
                stop_reason = STOPPED_ON_BUDGET
                _note_budget(progress, budget, state["epoch"])
                break
            torch.manual_seed(config.seed + 1000 * epoch + env.rank)
            reset_peak_memory()
            epoch_start = time.perf_counter()
            resumed, state["resume_epoch"] = state["resume_epoch"], None  # only the first epoch
            earlier_seconds = resumed.epoch_seconds if resumed else 0.0
            try:
                stats = train_one_epoch(engine, loaders, epoch, metrics, device, noise, progress,
                                        env.world_size, stop=stop, resume=resumed, epochs=config.epochs,
                                        budget_s=None if budget is None else budget - trained_seconds,
                                        exclude_first_step=compile_pending)
            except EpochStopped as stopped:
                if stopped.signal_number == STOP_FILE:
                    # Asked to end (a sweep pruned the run): no requeue, the epoch is not finished.
                    stop_reason = STOPPED_ON_REQUEST
                    log.info("stopping in epoch %d: %s exists", epoch, run.files.stop_request)
                    progress.note(f"stopping in epoch {epoch}: a stop was requested ({run.files.stop_request})")
                    break
                # Nothing new since the last checkpoint (stop at an epoch's first step): keep it.
                tag = checkpoints.latest_tag() if env.is_main else None
                if stopped.trained:
                    stopped.state.epoch_seconds = earlier_seconds + time.perf_counter() - epoch_start
                    tag = _save_mid_epoch(checkpoints, engine, env, state, stopped.state, noise, weights_meta)
                raise TrainingPreempted(tag, epoch, stopped.state.micro_batches,
                                        stopped.signal_number) from None
            compile_pending = False
            cut_short = stats.pop("budget_reached")
            stats.update(validate(engine, loaders, metrics, device))
            # Every rank must take the same best/patience decisions: rank 0's figures are the record.
            stats = broadcast(stats)
            trained_seconds += stats["train_seconds"]
            score = stats["val_dice"]
            improved = score is not None and (state["best_score"] is None or score > state["best_score"])
            if improved:
                state.update(best_score=stats["val_dice"], best_epoch=epoch, bad_epochs=0)
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch
            # The row is on disk before the checkpoint becomes `latest`: a crash between the two
            # resumes from the previous checkpoint, which drops this row and trains the epoch again.
            last_row = _metrics_row(config, engine, env, device, epoch, stats, noise,
                                    earlier_seconds + time.perf_counter() - epoch_start)
            if env.is_main:
                run.append_metrics(last_row)
            client = {key: state[key] for key in _STATE_KEYS}
            client["noise_scale"] = noise.state_dict() if noise else None
            checkpoints.save(epoch, stats["val_dice"], extra_meta={"val_dice": stats["val_dice"]},
                             write_fn=lambda folder: save_engine_checkpoint(
                                 engine, folder, client, weights_meta, env.is_main))
            line = _epoch_line(config, last_row, improved)
            log.info("%s", line)
            progress.end_epoch(line)
            if cut_short:
                stop_reason = STOPPED_ON_BUDGET
                _note_budget(progress, budget, epoch)
                break
            if config.patience and state["bad_epochs"] >= config.patience:
                stop_reason = "patience"
                log.info("stopping: val Dice did not improve for %d epochs", config.patience)
                progress.note(f"stopping early: val Dice did not improve for {config.patience} epochs")
                break
    if last_row is None:
        rows = run.read_metrics()
        last_row = rows[-1] if rows else None
    summary = FinalSummary(
        run_dir=str(run.path), stopped=stop_reason, epochs_completed=state["epoch"],
        epochs_planned=config.epochs, best_epoch=state["best_epoch"], best_val_dice=state["best_score"],
        best_checkpoint=checkpoints.best_tag() if env.is_main else None,
        last=last_row.to_dict() if last_row is not None else None,
    )
    if env.is_main:
        run.write_final(summary)
    barrier()
    return summary
