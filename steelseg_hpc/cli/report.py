"""CLI command ``report`` (registered on the root group)."""
from __future__ import annotations

from pathlib import Path

import click

from steelseg_hpc import launch, report as report_stage
from steelseg_hpc.cli._app import console, main


@main.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"), show_default=True,
              help="Folder for report.html, report.md, report.json and the plots.")
@click.option("--split", default="test", show_default=True, help="Store split of the whole-image evaluation.")
@click.option("--no-evaluate", is_flag=True, help="Do not evaluate runs that have no evaluation yet: say so.")
@click.option("--title", default=None, help="The page's title.")
@click.option("--force", is_flag=True, help="Replace files in --out that the report did not write.")
@click.option("--index", "index_path", type=click.Path(dir_okay=False), default=None,
              help="Experiment index (default: $STEELSEG_INDEX or ~/.local/share/steelseg-hpc/index.sqlite).")
def report(targets, out, split, no_evaluate, title, force, index_path) -> None:
    """The lab's comparison page for EXPERIMENTs, sweeps or RUN_DIRs: an offline HTML file and Markdown."""
    result = report_stage.build_report(list(targets), out, split=split, index=launch.ExperimentIndex(index_path),
                                       evaluate_missing=not no_evaluate, title=title,
                                       force=force)
    for note in result["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(f"{result['runs']} run(s) of {result['architectures']} architecture(s)"
                  f"{', sweeps ' + ', '.join(result['sweeps']) if result['sweeps'] else ''}: "
                  f"{Path(result['html']).absolute()} (and report.md)", highlight=False)
