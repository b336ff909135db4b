"""``demo``: the whole journey on embedded defaults, on this machine; ``--quick``: one model."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import click
from click.core import ParameterSource

from steelseg_hpc import demo as demo_stage
from steelseg_hpc import launch, sweeps
from steelseg_hpc.cli._app import console, main
from steelseg_hpc.cli.data import parse_int_list, parse_size
from steelseg_hpc.cli.status import render_status, render_sweeps, wide_console
from steelseg_hpc.cli.inference import render_evaluation


#: The journey's defaults, shown in --help and used unless a flag says otherwise (one source).
DEFAULTS = {f.name: f.default for f in dataclasses.fields(demo_stage.JourneyOptions)
            if f.default is not dataclasses.MISSING}
QUICK_EPOCHS = 3


def _step(number: int, total: int, title: str) -> None:
    console.rule(f"{number}/{total} {title}")


def _echo(line: str) -> None:
    console.print(line, highlight=False)


#: Flags that only one of the two modes reads; giving one to the other mode is an error, not a no-op.
JOURNEY_ONLY = ("dataset", "spec", "raw", "width", "max_train_tiles", "sweep_ranks")
QUICK_ONLY = ("arch",)


def _refuse_flags_of_the_other_mode(ctx: click.Context, quick: bool) -> None:
    given = [name for name in (JOURNEY_ONLY if quick else QUICK_ONLY)
             if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise click.UsageError(f"{flags}: only read {'without' if quick else 'with'} --quick"
                               + (" (--quick trains one model on synthetic data)" if quick else
                                  " (the whole journey trains every architecture)"))


@main.command()
@click.option("--dir", "workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Working folder [default: demo; demo-metaldam with --dataset metaldam; demo-SPEC with --spec].")
@click.option("--dataset", type=click.Choice(["synthetic", "metaldam"]), default="synthetic", show_default=True,
              help="metaldam: the real MetalDAM images (./data_prep/metaldam.toml here or above, else the spec "
                   "shipped with steelseg-hpc; --raw gives its images).")
@click.option("--spec", type=click.Path(dir_okay=False, path_type=Path), help="Any dataset spec instead.")
@click.option("--raw", type=click.Path(file_okay=False, path_type=Path), help="The raw folder of --spec or --dataset.")
@click.option("--quick", is_flag=True, help="Only synth, prep, one model and its evaluation (about two minutes).")
@click.option("--size", default="x".join(map(str, DEFAULTS["size"])), show_default=True,
              help="WIDTHxHEIGHT of the synthetic images.")
@click.option("--tile-size", default=DEFAULTS["tile_size"], show_default=True, type=click.IntRange(16))
@click.option("--workers", default=DEFAULTS["workers"], show_default=True, type=click.IntRange(0),
              help="Dask workers for prep.")
@click.option("--width", default=DEFAULTS["width"], show_default=True, type=click.IntRange(1),
              help="base_channels of the CNNs.")
@click.option("--epochs", type=click.IntRange(0),
              help=f"Epochs per run [default: {DEFAULTS['epochs']}; --quick: {QUICK_EPOCHS}, 0 = prep only].")
@click.option("--max-train-tiles", default=DEFAULTS["max_train_tiles"], show_default=True, type=click.IntRange(1),
              help="Training tiles per run.")
@click.option("--sweep-ranks", default=",".join(map(str, DEFAULTS["sweep_ranks"])), show_default=True,
              help="LoRA ranks of the sweep.")
@click.option("--arch", default="unet3plus", show_default=True, help="--quick: the architecture to train.")
def demo(workdir, dataset, spec, raw, quick, size, tile_size, workers, width, epochs, max_train_tiles,
         sweep_ranks, arch) -> None:
    """The whole journey: data → Zarr store → the zoo of 7 models → evaluation → a sweep → report.

    Runs on this machine with the local executor (so `steelseg-hpc status` shows the jobs) and
    ends with the path of the report page. Run it again to resume: finished steps are skipped.
    """
    _refuse_flags_of_the_other_mode(click.get_current_context(), quick)
    if quick:
        result = demo_stage.quick_demo(workdir or Path("demo"), size=parse_size(size), tile_size=tile_size, workers=workers,
                                       arch=arch, epochs=QUICK_EPOCHS if epochs is None else epochs,
                                       echo=_echo, step=_step)
        if "evaluation" in result:
            render_evaluation(result["evaluation"], f"{arch} on the test images · {result['evaluation']['checkpoint']}")
        return
    if epochs == 0:
        raise click.BadParameter("0 (prep only) needs --quick; the whole journey trains at least 1 epoch",
                                 param_hint="--epochs")
    index = launch.ExperimentIndex()
    options = demo_stage.JourneyOptions(
        folder=workdir, dataset=dataset, spec=spec, raw=raw, size=parse_size(size), tile_size=tile_size,
        workers=workers, width=width, epochs=DEFAULTS["epochs"] if epochs is None else epochs, max_train_tiles=max_train_tiles,
        sweep_ranks=parse_int_list(sweep_ranks, "--sweep-ranks", allow_zero=True), index=index)

    def show_status(experiment: str, sweep: str) -> None:
        out = console if console.is_terminal else wide_console()
        out.print(render_status(launch.collect_status(experiment, index)))
        out.print(render_sweeps(sweeps.all_sweeps(index, sweep)))

    result = demo_stage.Journey(options, step=_step, echo=_echo, show_status=show_status).run()
    for sentence in result["answers"]:
        console.print(f"• {sentence}", highlight=False)
    console.print(f"[bold green]done[/] in {result['minutes']:.1f} min: the report is "
                  f"{Path(result['report']).absolute()}", highlight=False)
