"""``demo``: the main job on embedded defaults, on this machine: data → store → train → evaluate."""
from __future__ import annotations

from pathlib import Path

import click

from steelseg_hpc import data, training
from steelseg_hpc.cli._app import console, main
from steelseg_hpc.cli.data import parse_size, run_prep
from steelseg_hpc.cli.train import render_evaluation

# Small enough for a laptop CPU in a few minutes, large enough that the model visibly learns.
DEMO_RUN_OVERRIDES = ["model.base_channels=8", "micro_batch=8", "grad_accumulation=2", "data.num_workers=0"]


@main.command()
@click.option("--dir", "workdir", default="demo", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", default="256x256", show_default=True, help="WIDTHxHEIGHT of the synthetic images.")
@click.option("--tile-size", default=128, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="Dask workers for prep.")
@click.option("--arch", default="unet3plus", show_default=True, help="Architecture to train.")
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(0), help="0 = prep only.")
def demo(workdir: Path, size: str, tile_size: int, workers: int, arch: str, epochs: int) -> None:
    """Synthetic SEM data → Zarr store → a short DeepSpeed training run → whole-image evaluation."""
    steps = 2 if epochs == 0 else 4
    console.rule(f"1/{steps} synthetic SEM dataset")
    spec_path = data.make_synthetic_dataset(workdir / "raw", size=parse_size(size), tile_size=tile_size, seed=0)
    console.print(f"raw images and spec: {spec_path}")
    console.rule(f"2/{steps} prep → Zarr")
    store = workdir / "store.zarr"
    run_prep(spec_path, store, None, None, None, workers, "local", None, False)
    if epochs == 0:
        return
    console.rule(f"3/{steps} train {arch} ({epochs} epochs, DeepSpeed)")
    run_dir = workdir / "runs" / arch
    summary = training.train(training.load_run_config(None, DEMO_RUN_OVERRIDES, arch=arch, store=store, epochs=epochs), run_dir)
    console.print(f"best val Dice {summary.best_val_dice:.4f} at epoch {summary.best_epoch}; run directory {run_dir}")
    console.rule(f"4/{steps} evaluate whole test images (sliding window)")
    result = training.evaluate_run(run_dir, split="test")
    render_evaluation(result, f"{arch} on the test images · {result['checkpoint']}")
