"""CLI commands for data: ``synth`` and ``prep``."""
from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from steelseg_hpc import data
from steelseg_hpc.cli._app import console, main
from steelseg_hpc.core.errors import ConfigError


def parse_int_list(text: str, option: str, allow_zero: bool = False) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{option}: expected comma-separated integers like 6,10,8, got {text!r}") from None
    if not values or min(values) < (0 if allow_zero else 1):
        raise ConfigError(f"{option}: every value must be {'>= 0' if allow_zero else 'positive'}, got {text!r}")
    return values


def parse_size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise ConfigError(f"--size: expected WIDTHxHEIGHT like 1660x1640, got {text!r}")
    return int(width), int(height)


@main.command()
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to write.")
@click.option("--groups", default="6,10,8", show_default=True, help="Images per group.")
@click.option("--size", default="1660x1640", show_default=True, help="WIDTHxHEIGHT of every image.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--tile-size", type=int, default=None, help="Tile size written into spec.toml.")
@click.option("--copies", type=int, default=1, show_default=True, help="Augmented copies per train tile.")
@click.option("--force", is_flag=True, help="Write into a non-empty folder synth did not make.")
def synth(out: Path, groups: str, size: str, seed: int, tile_size: int | None, copies: int, force: bool) -> None:
    """Write a deterministic synthetic SEM steel dataset and its spec.toml."""
    counts = parse_int_list(groups, "--groups")
    spec_path = data.make_synthetic_dataset(out, counts, parse_size(size), seed, tile_size=tile_size, copies=copies,
                                            force=force)
    console.print(f"wrote {sum(counts)} images in {len(counts)} groups to {out}; spec: {spec_path}")


def render_prep_summary(summary) -> Table:
    title = f"{summary.store} — " + ("up to date, nothing to do" if summary.up_to_date else f"{summary.tiles_written} tiles written")
    table = Table(title=title)
    for column in ("split", "images", "tiles", "written", "MiB", "worker s"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for name, entry in summary.splits.items():
        table.add_row(
            name, str(entry.images), str(entry.tiles), str(entry.written), f"{entry.bytes / 2**20:.1f}", f"{entry.seconds:.1f}"
        )
    table.caption = f"wall time {summary.wall_seconds:.1f} s"
    return table


def run_prep(spec, out, raw, tile_size, stride, workers, dask_cluster, profile, force, overrides=()):
    """Load the spec, prepare with a rich progress bar, print the summary table."""
    loaded = data.load_spec(spec, raw_dir=raw, tile_size=tile_size, stride=stride, overrides=list(overrides))
    columns = (TextColumn("prep"), BarColumn(), MofNCompleteColumn(), TextColumn("tiles"), TimeElapsedColumn(), TimeRemainingColumn())
    # off when not a terminal: a transient bar there leaves a stray empty line in logs
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("prep", total=None)

        def progress(advance: int, total: int) -> None:
            bar.update(task, total=total, advance=advance)

        summary = data.prepare(loaded, out, workers=workers, dask_cluster=dask_cluster, profile=profile, force=force, progress=progress)
    console.print(render_prep_summary(summary))
    return summary


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The Zarr store to write (STORE.zarr).")
@click.option("--raw", type=click.Path(file_okay=False, path_type=Path), default=None, help="Raw folder (overrides the spec's raw_dir).")
@click.option("--tile-size", type=int, default=None, help="Overrides tiling.tile_size.")
@click.option("--stride", type=int, default=None, help="Overrides tiling.stride.")
@click.option("--workers", type=int, default=2, show_default=True, help="Dask workers (0 = in this process).")
@click.option("--dask-cluster", default="local", show_default=True, help="local, slurm, or a scheduler address.")
@click.option("--profile", default=None, metavar="NAME|PATH",
              help="Cluster profile for --dask-cluster slurm: a name (local-cluster) or a TOML path.")
@click.option("--force", is_flag=True, help="Rebuild a store prepared from a different spec.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a spec field (dotted, repeatable), e.g. --set split.fold=1.")
def prep(spec, out, raw, tile_size, stride, workers, dask_cluster, profile, force, overrides) -> None:
    """Tile and augment the images of SPEC into a resumable Zarr store.

    SPEC is a dataset spec path or a name: metaldam finds ./data_prep/metaldam.toml here or above,
    else the one shipped with steelseg-hpc (whose raw_dir then starts from ./data_prep/).
    """
    if dask_cluster == "slurm" and profile is None:
        raise ConfigError("--dask-cluster slurm needs --profile (e.g. --profile local-cluster)")
    run_prep(spec, out, raw, tile_size, stride, workers, dask_cluster, profile, force, overrides)
