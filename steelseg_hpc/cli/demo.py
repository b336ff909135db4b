"""``demo``: the whole pipeline on embedded defaults, on this machine."""
from __future__ import annotations

from pathlib import Path

import click

from steelseg_hpc.cli._app import console, main
from steelseg_hpc.cli.data import run_prep


@main.command()
@click.option("--dir", "workdir", default="demo", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", default="256x256", show_default=True, help="WIDTHxHEIGHT of the synthetic images.")
@click.option("--tile-size", default=128, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int)
def demo(workdir: Path, size: str, tile_size: int, workers: int) -> None:
    """Make a small synthetic dataset, prep it into a Zarr store and summarise it."""
    from steelseg_hpc.cli.data import parse_size
    from steelseg_hpc.data.synth import make_synthetic_dataset

    console.rule("1/2 synthetic SEM dataset")
    spec_path = make_synthetic_dataset(workdir / "raw", size=parse_size(size), tile_size=tile_size, seed=0)
    console.print(f"raw images and spec: {spec_path}")
    console.rule("2/2 prep → Zarr")
    run_prep(spec_path, workdir / "store.zarr", None, None, None, workers, "local", None, False)
