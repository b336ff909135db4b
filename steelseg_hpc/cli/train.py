"""CLI command ``train`` (registered on the root group)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from steelseg_hpc import training
from steelseg_hpc.cli._app import console, err_console, main


@main.command()
@click.option("--arch", help="Architecture name (see `steelseg-hpc models`).")
@click.option("--store", type=click.Path(path_type=Path), help="Prepared Zarr store.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help="Run config TOML.")
@click.option("--run-dir", type=click.Path(path_type=Path), help="Run directory (default runs/ARCH).")
@click.option("--epochs", type=int, help="Number of epochs (more than a finished run's extends it).")
@click.option("--batch-size", type=int, help="Micro-batch size per rank.")
@click.option("--lr", type=float, help="Peak learning rate (AdamW).")
@click.option("--zero-stage", type=click.IntRange(0, 3), help="DeepSpeed ZeRO stage.")
@click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]),
              help="Compute precision (default auto: bf16 where the hardware has it natively).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any run config field, e.g. --set model.base_channels=8 (repeatable).")
@click.option("--restart", is_flag=True,
              help="If the run dir has a history but no intact checkpoint, move its files aside and start over.")
def train(arch, store, config_path, run_dir, epochs, batch_size, lr, zero_stage, precision, overrides,
          restart) -> None:
    """Train (or resume, or extend) one run with DeepSpeed; under torchrun/srun every rank runs this.

    SIGTERM or SIGUSR2 (SLURM's warning) saves a checkpoint at the next optimiser step and exits
    with 128 + the signal number; the same command then resumes mid-epoch. Ctrl-C still stops at
    once, losing the epoch in progress. Library messages (DeepSpeed, torch) go to the run's
    train.log; add -v to see them here too.
    """
    config = training.load_run_config(config_path, list(overrides), arch=arch, store=store, epochs=epochs,
                                      batch_size=batch_size, lr=lr, zero_stage=zero_stage, precision=precision)
    try:
        with training.StopRequest() as stop:
            summary = training.train(config, run_dir or Path("runs") / config.model.name, stop=stop,
                                     restart=restart)
    except training.TrainingPreempted as exc:
        if os.environ.get("RANK", "0") == "0":
            err_console.print(f"[bold yellow]stopped:[/] {exc}. Run the same command to resume.",
                              highlight=False, soft_wrap=True)
        sys.exit(128 + int(exc.signal))
    if os.environ.get("RANK", "0") == "0" and summary.best_val_dice is not None:
        console.print(f"[bold green]done[/] {summary.run_dir}: {summary.stopped} after "
                      f"{summary.epochs_completed} epochs; best val Dice {summary.best_val_dice:.4f} "
                      f"(epoch {summary.best_epoch})", highlight=False)
