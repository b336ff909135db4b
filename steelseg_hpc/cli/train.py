"""CLI commands ``train``, ``evaluate`` and ``export`` (registered on the root group)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.table import Table

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


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--split", default="test", show_default=True, help="Store split with whole images.")
@click.option("--tta", is_flag=True, help="Average over flips (test-time augmentation).")
@click.option("--checkpoint", default="best", show_default=True, metavar="best|latest|TAG",
              help="Which checkpoint: the best val Dice, the newest intact one, or a tag (epoch0007).")
@click.option("--store", type=click.Path(path_type=Path), default=None,
              help="The run's store at another path (default: where the run recorded it).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def evaluate(run_dir, split, tta, checkpoint, store, as_json) -> None:
    """Sliding-window evaluation of a run's checkpoint on whole images."""
    result = training.evaluate_run(run_dir, split=split, tta=tta, checkpoint=checkpoint, store=store)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    render_evaluation(result, f"{run_dir} · {split}{' · TTA' if tta else ''} · "
                              f"{result['checkpoint_choice']} checkpoint {result['checkpoint']}")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The .safetensors file to write.")
@click.option("--force", is_flag=True, help="Replace --out if it exists.")
def export(run_dir, out, force) -> None:
    """Write a run's best weights for inference, LoRA adapters merged into SAM's qkv."""
    info = training.export_run(run_dir, out, force=force)
    merged = f", {info['merged_adapters']} LoRA adapters merged" if info["merged_adapters"] else ""
    console.print(f"wrote {info['out']}: {info['arch']} from checkpoint {info['checkpoint']}, "
                  f"{info['tensors']} tensors{merged}; load it with "
                  "steelseg_hpc.training.load_exported(PATH)", highlight=False)


def render_evaluation(result: dict, title: str) -> None:
    """Per-image and overall pixel accuracy, Dice and mIoU: the lab's comparison figures."""
    table = Table(title=title)
    for column in ("image", "pixel acc.", "Dice", "mIoU"):
        table.add_column(column, justify="left" if column == "image" else "right")
    rows = [*result["per_image"], {"name": "[bold]overall", **result["overall"]}]
    for row in rows:
        table.add_row(row["name"], f"{row['pixel_accuracy']:.4f}", f"{row['dice_macro']:.4f}", f"{row['miou']:.4f}")
    console.print(table)
    console.print(f"overlays and metrics.json in {result['output_dir']}")
