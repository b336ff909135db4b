"""CLI commands ``evaluate`` and ``export``: what is done with a trained run (registered on the root group)."""
from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from steelseg_hpc import inference
from steelseg_hpc.cli._app import console, main


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
    result = inference.evaluate_run(run_dir, split=split, tta=tta, checkpoint=checkpoint, store=store)
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
    info = inference.export_run(run_dir, out, force=force)
    merged = f", {info['merged_adapters']} LoRA adapters merged" if info["merged_adapters"] else ""
    console.print(f"wrote {info['out']}: {info['arch']} from checkpoint {info['checkpoint']}, "
                  f"{info['tensors']} tensors{merged}; load it with "
                  "steelseg_hpc.inference.load_exported(PATH)", highlight=False)


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
