"""CLI commands ``logs`` and ``cancel``: a job's output, and stopping jobs."""
from __future__ import annotations

from collections import Counter

import click

from steelseg_hpc import launch as launch_stage
from steelseg_hpc.cli._app import console, main
from steelseg_hpc.cli._options import index_option


@main.command()
@click.argument("job_id")
@click.option("--tail", "lines", type=int, default=None, help="Only the last N lines of each.")
@index_option
def logs(job_id, lines, index_path) -> None:
    """Print the stdout and stderr of JOB_ID."""
    out = launch_stage.job_logs(job_id, launch_stage.ExperimentIndex(index_path), lines)
    for name in ("stdout", "stderr"):
        console.rule(f"{name}: {out[name + '_path']}", style="dim")
        click.echo(out[name])


@main.command()
@click.argument("target")
@click.option("--signal", "signal_name", default=None, metavar="NAME",
              help="Only send a signal (USR2 = checkpoint and requeue) instead of cancelling.")
@index_option
def cancel(target, signal_name, index_path) -> None:
    """Cancel an experiment's jobs, or one job.

    TARGET is an experiment name or a job id.
    """
    outcome = launch_stage.cancel(target, launch_stage.ExperimentIndex(index_path), signal_name)
    ended = ""
    if outcome.ended:
        counts = Counter(outcome.ended.values())
        ended = f"{len(outcome.ended)} job(s) had already ended ({', '.join(f'{s} {n}' for s, n in counts.items())})"
    if not outcome.acted:
        console.print(f"nothing to do: {ended or 'no jobs'}", highlight=False)
        return
    verb = f"sent SIG{launch_stage.parse_signal(signal_name).name.removeprefix('SIG')} to" if signal_name else "cancelled"
    console.print(f"{verb} {len(outcome.acted)} job(s): {', '.join(row.job_id for row in outcome.acted)}"
                  + (f"; {ended}" if ended else ""), highlight=False)
