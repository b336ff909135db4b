"""The whole journey on one machine: data → store → the model zoo → evaluation → a sweep → report.

``run_journey`` is what ``steelseg-hpc demo`` runs, on embedded defaults sized for a 2-core laptop:
synthetic SEM steel (or MetalDAM, or any dataset spec) is prepped into a Zarr store; the six CNNs
and a tiny SAM_LoRA train as one experiment through the local executor (so ``status`` shows it);
every run is evaluated on the whole test images; a 3-trial LoRA-rank sweep runs through the sweep
driver; and the report page is written. Every step skips what is already done, so running it again
resumes. ``quick_demo`` is the short single-model run.

Example:
    >>> result = run_journey(JourneyOptions(folder=Path("demo")))  # doctest: +SKIP
    >>> result["report"]  # doctest: +SKIP
    'demo/report/report.html'
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steelseg_hpc.compute.profiles import ClusterProfile
from steelseg_hpc.core import rundir
from steelseg_hpc.core.errors import ConfigError, LaunchError
from steelseg_hpc.core.shipped import find_named
from steelseg_hpc.data import ForeignFolderError, load_spec, make_synthetic_dataset, prepare
from steelseg_hpc.demo.options import JourneyOptions
from steelseg_hpc.inference import evaluate_run
from steelseg_hpc.launch import Experiment, ExperimentIndex, submit_experiment
from steelseg_hpc.launch.handle import handles_of, wait
from steelseg_hpc.models import architecture, architectures
from steelseg_hpc.report import build_report
from steelseg_hpc.sweeps.config import SweepSpec
from steelseg_hpc.sweeps.driver import SweepDriver
from steelseg_hpc.training import load_run_config, train

#: Every job of the journey: tiny widths and few tiles, fp32 unless the CPU has native bf16.
RUN_OVERRIDES = ["data.num_workers=0", "data.pin_memory=false", "progress=false", "schedule.warmup_epochs=0"]
SAM_OVERRIDES = ['model.variant="tiny"', 'model.prompt="none"']


Echo = Callable[[str], None]


@dataclass
class Journey:
    """The journey's steps, each skipping what an earlier run already did.

    Args:
        options: What to run.
        step: Called with ``(number, total, title)`` as each step starts.
        echo: Called with each progress line.
        show_status: Called with ``(experiment, sweep)`` names for the status step.
    """

    options: JourneyOptions
    step: Callable[[int, int, str], None] = lambda number, total, title: None
    echo: Echo = print
    show_status: Callable[[str, str], None] = lambda experiment, sweep: None
    steps = 7

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.options.folder.mkdir(parents=True, exist_ok=True)
        self.step(1, self.steps, "dataset")
        spec = self.dataset()
        self.step(2, self.steps, "prep → Zarr store (Dask workers)")
        store = self.prep(spec)
        self.step(3, self.steps, "train the model zoo (one experiment, local executor)")
        experiment = self.train_zoo(store)
        self.step(4, self.steps, "evaluate whole test images (sliding window)")
        self.evaluate(experiment)
        self.step(5, self.steps, "LoRA-rank sweep (the sweep driver)")
        sweep = self.sweep(store)
        self.step(6, self.steps, "status")
        self.show_status(experiment.name, sweep)
        self.step(7, self.steps, "report")
        result = build_report([experiment.name, sweep], self.options.folder / "report", index=self.options.index,
                              title=f"steelseg-hpc demo ({self.options.dataset})")
        return {**result, "report": result["html"], "experiment": experiment.name, "sweep": sweep,
                "minutes": (time.monotonic() - started) / 60}

    # ------------------------------------------------------------------ the steps
    def dataset(self) -> str | Path:
        """The dataset spec: a path, or the name of a project's or shipped spec (``metaldam``)."""
        o = self.options
        if o.spec is not None:
            return o.spec
        if o.dataset == "metaldam":
            found = find_named("dataset", "metaldam")
            if found is None:
                raise ConfigError("--dataset metaldam: no data_prep/metaldam.toml here or above, nor shipped; "
                                  "pass --spec SPEC")
            self.echo(f"MetalDAM: {found.describe()}, images in {o.raw or load_spec('metaldam').raw_dir}")
            return "metaldam"
        raw = o.folder / "raw"
        spec = raw / "spec.toml"
        if spec.is_file():
            self.echo(f"synthetic data already in {raw}")
            return spec
        try:
            make_synthetic_dataset(raw, size=o.size, tile_size=o.tile_size, seed=0)
        except ForeignFolderError as exc:
            raise exc.with_remedy(f"choose another --dir, or move it away; to run the demo on your own images "
                                  f"there, pass --spec SPEC --raw {raw}") from None
        self.echo(f"wrote synthetic SEM images and masks to {raw}")
        return spec

    def prep(self, spec: str | Path) -> Path:
        o = self.options
        tile = o.tile_size if o.dataset == "metaldam" or o.spec is not None else None
        loaded = load_spec(spec, raw_dir=o.raw, tile_size=tile, stride=tile)
        store = o.folder / "store.zarr"
        summary = prepare(loaded, store, workers=o.workers)
        written = "up to date" if summary.up_to_date else f"{summary.tiles_written} tiles written"
        self.echo(f"{store}: {written} ({summary.wall_seconds:.0f} s)")
        return store

    def _run_overrides(self) -> list[str]:
        o = self.options
        return [*RUN_OVERRIDES, f"epochs={o.epochs}", f"data.max_train_tiles={o.max_train_tiles}",
                f"micro_batch={o.micro_batch}", "grad_accumulation=2", "optimizer.lr=0.002"]

    def train_zoo(self, store: Path) -> Experiment:
        o = self.options
        cnns = [arch.name for arch in architectures() if arch.width_option == "base_channels"]
        sam = [arch.name for arch in architectures() if arch.family == "sam"]
        experiment = Experiment(
            name=f"{o.name}-zoo", architectures=cnns + sam, seeds=[0], store=store.absolute(),
            overrides=self._run_overrides(), runs_root=(o.folder / "runs").absolute(),
            arch_overrides={**{name: [f"model.base_channels={o.width}"] for name in cnns},
                            **{name: SAM_OVERRIDES for name in sam}})
        pending = [run for run in experiment.runs() if rundir.read_final(run.run_dir) is None]
        if not pending:
            self.echo(f"all {len(experiment.runs())} runs of {experiment.name} finished earlier")
            return experiment
        try:
            rows = submit_experiment(experiment, ClusterProfile(executor="local", max_requeues=1), o.index)
        except LaunchError as exc:  # jobs of an earlier demo still running: follow them
            self.echo(f"{exc}; following the running jobs")
            rows = o.index.jobs(experiment.name)
        self.echo(f"submitted {len(rows)} training jobs as experiment {experiment.name}: "
                  f"steelseg-hpc status {experiment.name}")
        self._wait(experiment.name)
        return experiment

    def _wait(self, name: str) -> None:
        seen: dict[str, tuple] = {}

        def echo_changes(rows: list) -> None:
            for row in rows:
                key = (row.state, row.epoch)
                if seen.get(row.job_id) != key:
                    seen[row.job_id] = key
                    epoch = f" epoch {row.epoch}/{row.epochs_total}" if row.epoch else ""
                    dice = f", val Dice {row.best_val_dice:.3f}" if row.best_val_dice is not None else ""
                    self.echo(f"  {row.arch:<24} {row.state}{epoch}{dice}")

        rows = wait(handles_of(name, self.options.index), poll_s=2.0, on_poll=echo_changes, with_progress=True)
        failed = [row for row in rows if row.state != "COMPLETED"]
        if failed:
            raise LaunchError(f"{len(failed)} demo job(s) did not complete, e.g. {failed[0].arch}: "
                              f"{failed[0].state} {failed[0].reason}; see steelseg-hpc logs {failed[0].job_id}")

    def evaluate(self, experiment: Experiment) -> None:
        for run in experiment.runs():
            result = rundir.read_evaluation(run.run_dir, "test")
            earlier = result is not None
            if not earlier:
                result = evaluate_run(run.run_dir, split="test")
            self.echo(f"  {run.arch:<24} test Dice {result['overall']['dice_macro']:.3f}, "
                      f"mIoU {result['overall']['miou']:.3f}" + (" (evaluated earlier)" if earlier else ""))

    def sweep(self, store: Path) -> str:
        o = self.options
        spec = SweepSpec.model_validate({
            "name": f"{o.name}-lora-rank", "store": str(store.absolute()), "parallel": 2,
            "runs_root": str((o.folder / "runs").absolute()), "pruner": {"kind": "none"},
            "base": {"arch": "sam-lora", "overrides": [*self._run_overrides(), *SAM_OVERRIDES]},
            "space": {"rank": {"key": "model.rank", "values": list(o.sweep_ranks)}}})
        driver = SweepDriver(spec, ClusterProfile(executor="local", max_requeues=1), index=o.index,
                             echo=lambda line: self.echo(f"  {line}"))
        driver.validate()
        summary = driver.run()
        counts = ", ".join(f"{n} {state.lower()}" for state, n in summary["trials"].items())
        best = summary.get("best")
        shown = (f"; best trial {best['number']}: val Dice {best['value']:.4f} with "
                 + ", ".join(f"{k}={v}" for k, v in best["params"].items())) if best else ""
        self.echo(f"sweep {spec.name}: {counts}{shown}")
        return spec.name


def quick_demo(folder: Path, size: tuple[int, int] = (256, 256), tile_size: int = 128, workers: int = 2,
               arch: str = "unet3plus", epochs: int = 3, echo: Echo = print,
               step: Callable[[int, int, str], None] = lambda n, total, title: None) -> dict[str, Any]:
    """The short demo: synthetic data → store → one model trained in this process → evaluation."""
    chosen = architecture(arch)  # an unknown name is refused before anything is written
    total = 2 if epochs == 0 else 4
    # the journey's own first two steps, on synthetic data in ``folder``
    journey = Journey(JourneyOptions(folder=folder, size=size, tile_size=tile_size, workers=workers), echo=echo)
    step(1, total, "synthetic SEM dataset")
    spec = journey.dataset()
    step(2, total, "prep → Zarr")
    store = journey.prep(spec)
    if epochs == 0:
        return {"store": str(store)}
    step(3, total, f"train {arch} ({epochs} epochs, DeepSpeed)")
    run_dir = folder / "runs" / arch
    size_down = [f"model.{chosen.width_option}=8"] if chosen.width_option else []
    if chosen.family == "sam":
        size_down = SAM_OVERRIDES
    overrides = [*size_down, "micro_batch=8", "grad_accumulation=2", "data.num_workers=0"]
    final = train(load_run_config(None, overrides, arch=arch, store=store, epochs=epochs), run_dir)
    echo(f"best val Dice {final.best_val_dice:.4f} at epoch {final.best_epoch}; run directory {run_dir}")
    step(4, total, "evaluate whole test images (sliding window)")
    return {"evaluation": evaluate_run(run_dir, split="test"), "run_dir": str(run_dir)}
