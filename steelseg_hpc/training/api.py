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
from pathlib import Path

import torch

from steelseg_hpc.compute.run_lock import RunLock
from steelseg_hpc.core.errors import DataError, TrainingError
from steelseg_hpc.core.rundir import FinalSummary
from steelseg_hpc.data import open_store, store_identity
from steelseg_hpc.training.config import RunConfig
from steelseg_hpc.training.data_loading import check_splits
from steelseg_hpc.training.distributed import on_main, resolve_dist_env, setup_distributed
from steelseg_hpc.training.log_capture import ThirdPartyLogs, run_log
from steelseg_hpc.training.oom import is_out_of_memory, out_of_memory_advice
from steelseg_hpc.training.preemption import StopRequest, TrainingPreempted
from steelseg_hpc.training.resume import FINISHED, plan_resume
from steelseg_hpc.training.run_writer import RunWriter
from steelseg_hpc.training.trainer import Trainer, TrainerHooks
from steelseg_hpc.training.weights import base_identity

log = logging.getLogger(__name__)

__all__ = ["train", "StopRequest", "TrainingPreempted"]


def train(config: RunConfig, run_dir: Path, stop: StopRequest | None = None,
          restart: bool = False, hooks: TrainerHooks | None = None) -> FinalSummary:
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
        hooks: Called after each optimiser step and each finished epoch, on every rank (the
            benchmarks time the training steps with them).

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
    run = RunWriter(run_dir)
    store = open_store(config.data.store)
    check_splits(store, config)
    plan = plan_resume(run.path, config, restart=restart, world_size=resolve_dist_env().world_size)
    plan.raise_if_refused()
    if plan.kind == FINISHED and not restart:
        log.warning("%s", plan.reason)
        return plan.final
    changes = plan.changes
    base = base_identity(config.model.name, config.model.options(), config.seed)
    identity = store_identity(store)
    with ThirdPartyLogs() as third_party:
        env = setup_distributed(rendezvous_dir=run.files.rendezvous)
        third_party.take_over("DeepSpeed")  # its logger gets its own handler on import
        stop = stop if stop is not None else StopRequest(signals=())
        if env.is_main:
            stop.watch(run.files.stop_request)
        lock = RunLock(run.path, enabled=env.is_main)
        on_main(env, lock.acquire)
        try:
            trainer = Trainer.setup(config, run, env, store, base=base, identity=identity, changes=changes,
                                    restart=restart, stop=stop)
            if hooks is not None:
                hooks.install(trainer)
            with run_log(run.attach_log if env.is_main else None, third_party):
                return _fit(trainer)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
            raise TrainingError(out_of_memory_advice(config, exc)) from None
        finally:
            lock.release()


def _fit(trainer: Trainer) -> FinalSummary:
    try:
        return trainer.fit()
    except TrainingError as exc:
        log.info("failed: %s", exc)  # for train.log; the caller shows the error itself
        raise
    except TrainingPreempted as exc:
        log.info("%s", exc)
        raise
