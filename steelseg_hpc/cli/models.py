"""CLI command ``steelseg-hpc models``: what every architecture costs on this machine."""
from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from steelseg_hpc import models as models_stage
from steelseg_hpc.cli._app import console, err_console, main


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--tile", default=256, show_default=True, type=click.IntRange(16), help="Tile side (px).")
@click.option("--batch", default=2, show_default=True, type=click.IntRange(1), help="Tiles per step.")
@click.option("--base-channels", type=click.IntRange(1), help="CNN width (default: the paper's, 64).")
@click.option("--arch", "archs", multiple=True, help="Only these architectures (repeatable).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
@click.option("--bf16", is_flag=True, help="Run the step under bf16 autocast.")
def models(as_json: bool, tile: int, batch: int, base_channels: int | None, archs: tuple[str, ...],
           device: str, bf16: bool) -> None:
    """List the architectures: parameters, GFLOPs per tile and peak memory of one training step."""
    names = list(archs) or models_stage.list_models()
    models_stage.check_device(device)
    results = models_stage.profile_zoo(names, tile=tile, batch=batch, base_channels=base_channels,
                                       device=device, bf16=bf16)
    rows = [r.as_dict() if hasattr(r, "as_dict") else {"name": r[0], "error": r[1]} for r in results]
    failed = [row for row in rows if "error" in row]
    if as_json:
        click.echo(json.dumps({"tile": tile, "batch": batch, "device": device, "archs": rows}))
        if rows and len(failed) == len(rows):
            sys.exit(1)
        return
    table = Table(title=f"architectures at {batch} x {tile}² on {device}{' (bf16)' if bf16 else ''}")
    for column in ("architecture", "params (M)", "GFLOPs / tile", "peak train memory (MiB)"):
        table.add_column(column, justify="left" if column == "architecture" else "right")
    for row in rows:
        if "error" in row:
            table.add_row(row["name"], "[red]" + row["error"] + "[/]", "", "")
        else:
            table.add_row(row["name"], f"{row['params'] / 1e6:.2f}", f"{row['gflops']:.3g}",
                          f"{row['peak_bytes'] / 2**20:.0f}")
    console.print(table)
    if rows and len(failed) == len(rows):
        err_console.print(f"[bold red]error:[/] no architecture could be measured on {device} "
                          f"(first: {failed[0]['name']}: {failed[0]['error']})")
        sys.exit(1)
