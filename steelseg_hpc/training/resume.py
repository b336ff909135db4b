"""What a run directory will do with a run config: the one owner of the resume policy.

:func:`plan_resume` reads a run directory (never writes it) and says whether training there with
``config`` starts a new run, resumes an unfinished one, extends a finished one (a raised
``epochs``, ``patience`` or ``time_budget_s``), returns at once (nothing left to do), or is
refused: a changed config, another store's content or another base checkpoint than the run
trained on, or trained epochs with no intact checkpoint to resume them from. The engine follows
the plan; ``launch --dry-run`` shows it and ``launch`` refuses a refused plan before anything is
queued, so the three never disagree.

Example:
    >>> plan = plan_resume(Path("runs/unet"), load_run_config(None, ["epochs=10"]))  # doctest: +SKIP
    >>> plan.kind, plan.describe()  # doctest: +SKIP
    ('extend', 'extends 5 → 10 epochs')
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from steelseg_hpc.core import rundir
from steelseg_hpc.core.errors import ConfigError, DataError, SteelsegError, TrainingError
from steelseg_hpc.core.rundir import (
    STOPPED_ON_BUDGET,
    STOPPED_ON_PATIENCE,
    STOPPED_ON_REQUEST,
    FinalSummary,
    MetricsRow,
    RunFiles,
)
from steelseg_hpc.data import check_same_store, open_store
from steelseg_hpc.training.checkpoints import CheckpointManager
from steelseg_hpc.training.config import RunConfig, config_differences, extensions, load_saved_config

__all__ = ["FRESH", "RESUME", "EXTEND", "FINISHED", "REFUSED", "ResumePlan", "other_world_size", "plan_resume", "unresumable_history"]

FRESH, RESUME, EXTEND, FINISHED, REFUSED = "fresh", "resume", "extend", "finished", "refused"


@dataclass(frozen=True)
class ResumePlan:
    """What training in a run directory will do.

    Attributes:
        kind: ``fresh`` (no saved config), ``resume`` (continue an unfinished run), ``extend``
            (train a finished run on, for the raised keys in :attr:`changes`), ``finished``
            (return :attr:`final` at once) or ``refused`` (training would raise).
        reason: One line: why a ``finished`` run ends at once, or why a ``refused`` one is refused.
        changes: The raised keys, ``{key: (old, new)}`` (see :func:`~steelseg_hpc.training.config.extensions`).
        final: The saved summary, when the run has one.
        last_epoch: The last epoch in ``metrics.jsonl`` (0 when none).
        error: What training raises for a ``refused`` plan (:meth:`raise_if_refused`).
    """

    kind: str
    reason: str = ""
    changes: dict = field(default_factory=dict)
    final: FinalSummary | None = None
    last_epoch: int = 0
    error: type[SteelsegError] = ConfigError

    def raise_if_refused(self) -> None:
        """Raise the plan's one-line error if it is ``refused``."""
        if self.kind == REFUSED:
            raise self.error(self.reason)

    def describe(self) -> str:
        """A few words for the ``launch --dry-run`` table."""
        if self.kind == FINISHED:
            return f"finished: ends at once ({self.reason.split(': ', 1)[-1]})"
        if self.kind == REFUSED:
            return f"refused: {self.reason}"
        if self.kind == EXTEND:
            done = self.final.epochs_completed if self.final is not None else self.last_epoch
            parts = [f"{done} → {new} epochs" if key == "epochs" else f"{key} {old} → {new}"
                     for key, (old, new) in self.changes.items()]
            return f"extends {', '.join(parts)}"
        if self.kind == RESUME:
            return f"resumes after epoch {self.last_epoch}" if self.last_epoch else "resumes (no epoch finished)"
        return "new"


def plan_resume(run_dir: Path, config: RunConfig, restart: bool = False,
                world_size: int | None = None) -> ResumePlan:
    """What training ``config`` in ``run_dir`` will do; reads the run directory, changes nothing.

    Args:
        run_dir: The run directory (it need not exist).
        config: The resolved run configuration to train.
        restart: Training moves an unresumable history aside and starts over (``train --restart``),
            so neither the history nor the recorded store and base are refused.
        world_size: The number of ranks that will train (``nodes × tasks_per_node`` of the job);
            None leaves it unchecked.

    Returns:
        The plan. A ``refused`` plan's :attr:`~ResumePlan.reason` is the one-line error that
        training would raise: ``run_dir`` is a file; the config differs from the saved one in a
        key a resume may not change; the store's content or the base checkpoint is not what the
        run trained on; epochs were trained but no checkpoint of them is intact (checked by
        file sizes here; the job checks contents too); or the run trained on another number of
        ranks than ``world_size`` (its global batch and every rank's ZeRO shard depend on it).
    """
    files = RunFiles(Path(run_dir))
    path = files.path
    if path.exists() and not path.is_dir():
        return ResumePlan(REFUSED, f"--run-dir {path} is a file; expected a folder (new or of an earlier run)")
    if not files.config.exists():
        return ResumePlan(FRESH)
    try:
        saved = load_saved_config(files.config)
        rows, final = rundir.read_metrics(path), rundir.read_final(path)
    except SteelsegError as exc:
        return ResumePlan(REFUSED, str(exc))
    differences = config_differences(saved, config)
    if differences:
        return ResumePlan(REFUSED, f"{path}: the run config differs from the saved config.toml "
                                   f"({'; '.join(differences[:5])}); use a new --run-dir or the same settings "
                                   "to resume")
    changes = extensions(saved, config)
    last_epoch = max((row.epoch for row in rows), default=0)
    finished = _finished_reason(path, files, config, changes, final) if final is not None else None
    if finished is not None:
        return ResumePlan(FINISHED, finished, changes, final, last_epoch)
    kind = EXTEND if changes and final is not None else RESUME
    if not restart:
        try:
            _check_same_inputs(path, config)
        except DataError as exc:
            return ResumePlan(REFUSED, str(exc), changes, final, last_epoch, error=DataError)
        checkpoints = CheckpointManager(files.checkpoints, is_main=False)
        problem = (unresumable_history(path, rows, checkpoints, contents=False)
                   or other_world_size(path, rows, config, world_size))
        if problem is not None:
            return ResumePlan(REFUSED, problem, changes, final, last_epoch, error=TrainingError)
    return ResumePlan(kind, "", changes, final, last_epoch)


def _check_same_inputs(path: Path, config: RunConfig) -> None:
    """Refuse a store of other content, or another base checkpoint, than the run trained on."""
    from steelseg_hpc.training.weights import base_identity, check_same_base  # builds models: only when needed

    previous = rundir.read_run_info(path)
    if previous is None:
        return
    if previous.model.get("base") is not None:
        check_same_base(previous.model["base"], base_identity(config.model.name, config.model.options(),
                                                              config.seed), str(path))
    if previous.store and config.data.store:
        check_same_store(previous.store, open_store(config.data.store), str(path))


def unresumable_history(path: Path, rows: list[MetricsRow], checkpoints: CheckpointManager,
                        contents: bool = True) -> str | None:
    """Why the run's trained epochs cannot be resumed (no intact checkpoint of them), or None.

    A run cut off between epoch 1's metrics row and its first checkpoint has nothing to lose: it
    trains epoch 1 again, so that is no refusal.

    Args:
        contents: see :meth:`~steelseg_hpc.training.checkpoints.CheckpointManager.verify`.
    """
    saved = checkpoints.any_saved()
    if not (rows or saved) or checkpoints.resume_tag(contents) is not None:
        return None
    if not saved and max(row.epoch for row in rows) <= 1:
        return None
    damaged = checkpoints.complete_tags()
    what = (f"all {len(damaged)} checkpoint(s) ({', '.join(damaged)}) are damaged" if damaged
            else "its checkpoints are gone")
    return (f"{path} has {len(rows)} trained epoch(s) in {RunFiles(path).metrics.name} but {what}, so there "
            "is nothing to resume from; rerun with --restart to move its files aside and start over")


def other_world_size(path: Path, rows: list[MetricsRow], config: RunConfig, world_size: int | None) -> str | None:
    """Why ``world_size`` ranks cannot train this run on (it trained on another number), or None.

    The global batch is ``micro_batch × grad_accumulation × ranks`` and each rank saved its own
    ZeRO shard of the optimiser, so resuming on another number of ranks would change the run's
    batch size mid-run and find the wrong shards: a different experiment, refused rather than
    resharded silently.
    """
    # Before its first epoch row a run has at most a mid-epoch checkpoint, which says its own
    # number of ranks (the engine refuses another when it loads it).
    trained = next((row.world_size for row in reversed(rows) if row.world_size), None)
    if world_size is None or trained is None or trained == world_size:
        return None
    per_rank = config.micro_batch * config.grad_accumulation
    return (f"{path} trained on {trained} rank(s) (global batch {per_rank} x {trained} = {per_rank * trained}); "
            f"this job has {world_size}: resume it with nodes x tasks_per_node = {trained}, or use a new --run-dir")


def _finished_reason(path: Path, files: RunFiles, config: RunConfig, changes: dict,
                     final: FinalSummary) -> str | None:
    """Why a run with a final summary has nothing left to do, or None (it trains on)."""
    if final.stopped == STOPPED_ON_REQUEST and files.stop_request.exists():
        return (f"{path}: ended at epoch {final.epochs_completed} on a stop request; delete "
                f"{files.stop_request} to train it on")
    if final.stopped == STOPPED_ON_BUDGET and "time_budget_s" not in changes:
        return (f"{path}: stopped at epoch {final.epochs_completed} when its time budget of "
                f"{config.time_budget_s:g} s of training was used; raise time_budget_s to continue it")
    if final.stopped == STOPPED_ON_PATIENCE and "patience" not in changes:
        return (f"{path}: stopped early at epoch {final.epochs_completed} (no better val Dice for "
                f"{config.patience} epochs); raise patience to continue it")
    if config.epochs <= final.epochs_completed:
        return f"{path}: run already finished; returning its summary"
    return None
