"""The sweep driver: one process owns the study and keeps K trials in flight as jobs.

The driver asks Optuna for a trial, submits it as one job through the launcher (submitit, SLURM or
local), and follows it: the trial's run directory (``metrics.jsonl``, read through the run-dir
contract) gives one intermediate value per epoch, which the driver reports and offers the pruner;
the job's state (``sacct``/``squeue``, or the local process) says when it has ended. A pruned
trial's job is asked to stop at its next optimiser step (a stop-request file in its run dir): it
exits cleanly, frees its GPU and is not requeued. Jobs never touch the study's storage.

A finished trial frees its slot at once (no batch barrier). A job that dies (FAILED, OOM,
NODE_FAIL, TIMEOUT past its requeues, CANCELLED by someone) fails its trial, with the reason as a
user attribute, and the same parameters are run once more (``retries``); a job that SLURM
requeued after a node failure (``JobRequeue=1``) is cancelled and treated the same, so a node
failure means the same on every cluster. Preempted and requeued (time limit) jobs stay the same
trial and resume from their checkpoint. If the driver itself dies, running it
again re-attaches: every RUNNING trial is matched with its job (still running: followed; ended:
told), so there are no duplicate trials and no orphan jobs.

Example:
    >>> driver = SweepDriver.from_files("lora-rank", profile="local")  # doctest: +SKIP
    >>> summary = driver.run()  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from steelseg_hpc.compute.profiles import ClusterProfile, check_profile, load_profile, resolve_profile_path
from steelseg_hpc.compute.run_lock import RunLock
from steelseg_hpc.compute.slurm import node_failures
from steelseg_hpc.core import rundir
from steelseg_hpc.core.config import validate
from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.core.rundir import STOPPED_ON_REQUEST, RunFiles
from steelseg_hpc.launch import Executor, ExperimentIndex, TrainingJob
from steelseg_hpc.launch.handle import refresh, submit_indexed
from steelseg_hpc.launch.validate import check_store
from steelseg_hpc.sweeps import failures, guards, outcome
from steelseg_hpc.sweeps.config import SweepSpec, load_sweep, resolve_sweep_path
from steelseg_hpc.sweeps.locate import locate_study
from steelseg_hpc.sweeps.record import SweepRecord, write_record
from steelseg_hpc.sweeps.resume import InFlight, Resume
from steelseg_hpc.sweeps.scheduler import DONE, ENQUEUE, RETRY_PLANNED, SLOT, WAIT, Retry, Scheduler
from steelseg_hpc.sweeps.space import SearchSpace
from steelseg_hpc.sweeps.study import display_url, is_rdb, open_storage, open_study, recover_journal
from steelseg_hpc.sweeps.tally import tally_trials

log = logging.getLogger(__name__)


class SweepDriver(Resume):
    """Run (or resume) the sweep ``spec`` with jobs on ``profile``.

    Args:
        spec: The sweep (its ``store`` and paths absolute or relative to the current folder).
        profile: Where the trial jobs run.
        storage: A storage URL; None keeps the study in a journal file in the sweep's folder.
        index: The experiment index; the trial jobs are recorded under the sweep's name, so
            ``status NAME``, ``logs`` and ``cancel NAME`` work on them.
        poll_seconds: How often job states and run directories are read.
        echo: Where progress lines go (the CLI prints them; default: this module's logger).
        retry_failed: Give every failed point (see :mod:`.failures`) one more trial.
        new_study: Start a new study where the storage has none but trial run directories of an
            old one are (they are moved aside; see :mod:`.guards`).
    """

    def __init__(self, spec: SweepSpec, profile: ClusterProfile, storage: str | None = None,
                 index: ExperimentIndex | None = None, poll_seconds: float = 1.0,
                 echo: Callable[[str], None] | None = None, spec_file: Path | None = None,
                 profile_file: Path | None = None, retry_failed: bool = False, new_study: bool = False):
        self.spec = spec.model_copy(update={"store": spec.store.absolute(), "runs_root": spec.runs_root.absolute()})
        self.profile, self.profile_file, self.spec_file = profile, profile_file, spec_file
        self.folder = self.spec.folder()
        self.index = index or ExperimentIndex()
        self.storage_url = locate_study(self.spec.name, storage, self.index, self.folder).storage
        self.poll_seconds = poll_seconds
        self.retry_failed, self.new_study = retry_failed, new_study
        self.echo = echo or log.info
        self.space = SearchSpace(self.spec, world_size=profile.world_size())
        self.slots = self.space.slots()
        self.scheduler = Scheduler([self.space.encode_fixed(slot) for slot in self.slots], self.space.sibling,
                                   self.space.sampled(), retries=self.spec.retries)
        if self.space.trials_capped():
            self.echo(f"sweep {self.spec.name}: {self.space.trials_capped()}")
        self.in_flight: list[InFlight] = []
        self.events: list[dict[str, Any]] = []  # (for benchmarks) when each job was submitted and ended

    @classmethod
    def from_files(cls, sweep: str | Path, profile: str | Path | None = None, overrides: list[str] = (),
                   trials: int | None = None, parallel: int | None = None, store: str | Path | None = None,
                   **kwargs) -> "SweepDriver":
        """A validated driver for ``sweeps/NAME.toml`` (or a path), with CLI-style changes applied.

        Args:
            overrides: ``KEY=VALUE`` run-config overrides for every trial (after the sweep's own).
            trials, parallel, store: Replace the sweep file's values.
        """
        spec_file = resolve_sweep_path(sweep)
        data = load_sweep(spec_file).model_dump(mode="json")
        data["base"]["overrides"] += list(overrides)
        changes = (("trials", trials), ("parallel", parallel), ("store", str(store) if store else None))
        data.update({key: value for key, value in changes if value is not None})
        spec = validate(SweepSpec, data, str(spec_file))
        profile_file = resolve_profile_path(profile or spec.profile)
        driver = cls(spec, load_profile(profile_file), spec_file=spec_file, profile_file=profile_file, **kwargs)
        driver.validate()
        return driver

    # ------------------------------------------------------------------ checks before anything runs
    def validate(self) -> None:
        """Everything a sweep could fail on later, checked now (one line, nothing queued).

        Raises:
            ConfigError, LaunchError, DataError: bad space value, unreachable batch or storage,
                a profile that does not fit the cluster, a missing store.
        """
        source = str(self.spec_file or self.spec.name)
        if self.spec.objective.gpu_hours and self.spec.pruner.kind != "none":
            raise ConfigError(f"{source}: pruning is not defined for two objectives (val metric and "
                              "GPU-hours); set pruner.kind = \"none\"")
        check_store(self.spec.store)
        self.space.validate(source)
        check_profile(self.profile)
        if is_rdb(self.storage_url):
            open_storage(self.storage_url, create=True)  # reachable now, not after the first trial
        elif Path(self.storage_url).is_dir():
            raise ConfigError(f"--storage {display_url(self.storage_url)}: is a folder; expected a journal or an RDB URL")

    @cached_property
    def store_identity(self) -> dict[str, Any]:
        """The sweep's store, identified as a run identifies its own (:func:`.guards.identity_of`)."""
        return guards.identity_of(self.spec.store)

    def check_study(self, study: optuna.Study | None, set_aside: bool = True) -> None:
        """Refuse to add to ``study`` (None: not created yet) what would not belong in it.

        Args:
            set_aside: With ``new_study``, move old trial run directories aside (False: only check).

        Raises:
            DataError: the study was run on a store of other content (see :mod:`.guards`).
            ConfigError: no study, but trial run directories of an old one, and no ``new_study``.
        """
        if study is not None:
            guards.check_study_store(study.user_attrs, self.store_identity, self.spec.name)
        elif not self.new_study:
            guards.check_no_orphan_trials(self.folder, self.spec.name, self.storage_url)
        elif set_aside and (aside := guards.set_aside(self.folder)) is not None:
            self.echo(f"sweep {self.spec.name}: a new study; the old trial run directories are in {aside}")

    def plan(self) -> list[dict[str, Any]]:
        """What ``--dry-run`` prints: every trial slot's values and, when nothing is drawn at
        launch, the run-config overrides its job gets."""
        drawn = self.space.sampled()
        base_lr = self.space.base_config().optimizer.lr
        plan = []
        for number, slot in enumerate(self.slots):
            params = {**slot, **{name: f"<{self.spec.sampler.kind}>" for name in drawn}}
            plan.append({"slot": number, "params": params,
                         "overrides": None if drawn else self.space.overrides(slot, base_lr)})
        return plan

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict[str, Any]:
        """Run the sweep to the end (or re-attach to it); returns its summary."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with RunLock(self.folder):  # one driver per sweep: the journal has one writer
            for repair in recover_journal(self.storage_url):
                self.echo(f"sweep {self.spec.name}: {repair}")
            storage = open_storage(self.storage_url, create=True)
            self.check_study(guards.existing_study(self.spec.name, self.storage_url, storage))
            self.study = open_study(self.spec, storage, epochs=self.space.base_config().epochs)
            self.study.set_user_attr(guards.STORE_ATTR, self.study.user_attrs.get(guards.STORE_ATTR)
                                     or self.store_identity)
            self.study.set_user_attr("driver", {"host": socket.gethostname(), "pid": os.getpid(),
                                                "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
            base = self.space.base_config()
            write_record(self.study, SweepRecord(
                space={name: p.key for name, p in self.spec.space.items()}, metric=self.spec.objective.metric,
                seeds=list(self.spec.seeds), arch=base.model.name, norm=base.model.options().get("norm", "batch"),
                lr_scaling=self.spec.lr_scaling, base_overrides=list(self.spec.base.overrides)))
            self.index.record_sweep(self.spec.name, self.folder, self.storage_url,
                                    str(self.spec_file) if self.spec_file else None)
            self.index.record_experiment(self.spec.name, self.folder, str(self.spec_file) if self.spec_file else None,
                                         str(self.profile_file) if self.profile_file else None, self.profile.executor)
            self._reattach()
            self._enqueue_lost_retries()
            if self.retry_failed:
                self._enqueue_failed_points()
            while True:
                self._follow()
                while len(self.in_flight) < self.spec.parallel and self._launch_next():
                    pass
                if not self.in_flight:
                    break
                time.sleep(self.poll_seconds)
        return self.summary()

    def _trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def _launch_next(self) -> bool:
        """Start one more trial; False when every slot has its trial (or the next one must wait)."""
        decision = self.scheduler.next_trial(self._trials())
        if decision.kind in (WAIT, DONE):
            return False
        if decision.kind == ENQUEUE:
            self.study.enqueue_trial(decision.fixed, user_attrs={SLOT: decision.slot})
        trial = self.study.ask()
        slot = trial.user_attrs.get(SLOT, 0)
        try:
            params = self.space.suggest(trial)
        except ConfigError as exc:  # an enqueued value the space no longer holds (its file was edited)
            self._fail(trial, slot, f"cannot draw parameters: {exc}", retry=False)
            return True
        self._submit(trial, slot, params)
        return True

    def _submit(self, trial: optuna.trial.Trial, slot: int, params: dict[str, Any]) -> None:
        run_dir = self.folder / f"trial{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        try:
            config = self.space.run_config(params)
        except ConfigError as exc:
            self._fail(trial, slot, f"invalid parameters: {exc}", retry=False)
            return
        executor = Executor(self.profile, self.folder / "jobs", job_name=f"{self.spec.name}-t{trial.number}")
        (job,) = submit_indexed(executor, [TrainingJob(run_dir, config)], self.spec.name, self.index)
        row = job.row
        trial.set_user_attr("job_id", row.job_id)
        self.in_flight.append(InFlight(trial, slot, run_dir, job))
        self.events.append({"trial": trial.number, "job": row.job_id, "submitted": time.time()})
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        self.echo(f"trial {trial.number} ({shown}): job {row.job_id}")

    def _follow(self) -> None:
        """Report new epochs, prune, and tell every trial whose job has ended."""
        if not self.in_flight:
            return
        refresh([flight.handle for flight in self.in_flight])
        for flight in list(self.in_flight):
            rows = rundir.read_metrics(flight.run_dir)
            self._report(flight, rows)
            status = flight.handle.last
            state = status.state
            if rundir.read_final(flight.run_dir) is not None:
                # final.json is written last and atomically, so the result is complete while the job
                # still tears down (interpreter exit, SLURM epilog): telling the study now lets the
                # next trial queue behind it instead of waiting seconds for the job to vanish.
                state = "COMPLETED"
            elif node_failures(status.requeues):
                # SLURM requeued the job after a node failure. The sweep's rule for a dead job is
                # the same on every cluster, whatever its JobRequeue: the trial fails with the
                # reason and its parameters run again as a new trial of one uninterrupted job.
                flight.handle.cancel()
                self.in_flight.remove(flight)
                why = f"{'; '.join(node_failures(status.requeues))}; SLURM's requeue of it cancelled"
                self._finish(flight, "NODE_FAIL", why, rows)
                continue
            elif not flight.handle.ended:
                continue
            self.in_flight.remove(flight)
            self._finish(flight, state, status.reason, rows)

    def _report(self, flight: InFlight, rows: list) -> None:
        if len(self.study.directions) > 1:
            return  # Optuna prunes single-objective studies only
        metric = self.spec.objective.metric
        for row in rows[flight.reported:]:
            value = getattr(row, metric)
            if value is not None:
                flight.trial.report(value, step=row.epoch)
        flight.reported = len(rows)
        if rows and not flight.stop_requested and flight.trial.should_prune():
            RunFiles(flight.run_dir).stop_request.write_text(
                f"pruned by sweep {self.spec.name} after epoch {rows[-1].epoch}\n", encoding="utf-8")
            flight.stop_requested = True
            flight.trial.set_user_attr("pruned_after_epoch", rows[-1].epoch)
            self.echo(f"trial {flight.trial.number}: pruned after epoch {rows[-1].epoch}; asking job "
                      f"{flight.job.job_id} to stop")

    def _finish(self, flight: InFlight, state: str, reason: str, rows: list) -> None:
        trial, number = flight.trial, flight.trial.number
        for event in self.events:
            if event["job"] == flight.job.job_id:
                event["ended"] = time.time()
        for key, value in outcome.trial_attributes(str(flight.run_dir), rows).items():
            trial.set_user_attr(key, value)
        final = rundir.read_final(flight.run_dir)
        if state != "COMPLETED" or final is None:
            why = f"job {flight.job.job_id} {state}" + (f": {reason}" if reason else "")
            self._fail(trial, flight.slot, why)
            return
        if final.stopped == STOPPED_ON_REQUEST:
            self.study.tell(trial, state=TrialState.PRUNED)
            self.echo(f"trial {number}: PRUNED after {len(rows)} epoch(s)")
            return
        value = outcome.best(rows, self.spec.objective.metric)
        if value is None:
            self._fail(trial, flight.slot, f"no {self.spec.objective.metric} in {flight.run_dir}")
            return
        cost = outcome.run_cost(rows, outcome.host_of(str(flight.run_dir)))
        values = [value, cost.value] if self.spec.objective.gpu_hours else [value]
        self.study.tell(trial, values)
        self.echo(f"trial {number}: COMPLETE, {self.spec.objective.metric} {value:.4f}")

    def _fail(self, trial: optuna.trial.Trial, slot: int, reason: str, retry: bool = True) -> None:
        again = retry and self.scheduler.retry_after_failure(self._trials(), slot)
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr(RETRY_PLANNED, again)  # so a driver killed before enqueueing it still retries
        frozen = self.study.tell(trial, state=TrialState.FAIL)
        self.echo(f"trial {frozen.number}: FAIL ({reason})" + ("; running its parameters again" if again else ""))
        if again:
            self._enqueue(Retry(slot, frozen.params, frozen.number))

    def summary(self) -> dict[str, Any]:
        """Trials by state, the best one(s), and the points that failed (:mod:`.failures`)."""
        trials = self._trials()
        tally = tally_trials(trials, self.study.directions)
        best = None if tally.best is None else {"number": tally.best.number, "value": tally.best.values[0],
                                                "params": tally.best.params}
        return {"sweep": self.spec.name, "storage": display_url(self.storage_url), "trials": tally.counts,
                "best": best, "folder": str(self.folder), "points": len(self.slots),
                "failed": failures.describe(trials, self.index)}
