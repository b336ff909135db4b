"""CLI command ``status``: an experiment's jobs and the sweeps, once or ``--watch``."""
from __future__ import annotations

import json

import click
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from steelseg_hpc import launch as launch_stage
from steelseg_hpc import sweeps
from steelseg_hpc.cli._app import console, main
from steelseg_hpc.cli._options import index_option
from steelseg_hpc.launch.handle import handles_of, wait
from steelseg_hpc.launch.status import PROBLEM_STATES


@main.command()
@click.argument("experiment", required=False)
@click.option("--watch", is_flag=True, help="Refresh until every job has ended.")
@click.option("--json", "as_json", is_flag=True, help='Print JSON instead: {"jobs": [...], "sweeps": [...]}.')
@click.option("--interval", default=5.0, show_default=True, help="Seconds between refreshes.")
@index_option
def status(experiment, watch, as_json, interval, index_path) -> None:
    """Show the jobs of EXPERIMENT (or sweep): state, progress, metrics; and the sweeps.

    Without EXPERIMENT, the most recently launched one, and every sweep.
    """
    if watch and as_json:
        raise click.UsageError("--watch refreshes a table and --json prints once: choose one")
    if interval <= 0:
        raise click.BadParameter(f"{interval}: expected seconds > 0", param_hint="--interval")
    index = launch_stage.ExperimentIndex(index_path)
    if watch:
        watch_jobs(experiment, index, interval)
        return
    rows = launch_stage.collect_status(experiment, index)
    sweep_rows = _sweeps(index, experiment)
    if as_json:
        click.echo(json.dumps({"jobs": [row.to_dict() for row in rows],
                               "sweeps": [row.to_dict() for row in sweep_rows]}, indent=2))
    else:
        out = console if console.is_terminal else wide_console()
        out.print(render_status(rows))
        if sweep_rows:
            out.print(render_sweeps(sweep_rows))


def _sweeps(index, experiment: str | None) -> list:
    """The sweeps to show: the one named, or all of them when no experiment is named."""
    recorded = {entry["name"] for entry in index.sweeps()}
    if experiment is not None and experiment not in recorded:
        return []
    return sweeps.all_sweeps(index, experiment) if recorded else []


def render_sweeps(rows) -> Table:
    """One line per sweep: trials by state, the best trial, the trials in flight, the driver."""
    table = Table(title="sweeps", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for header in ("sweep", "trials", "best", "best params", "in flight", "driver"):
        table.add_column(header, no_wrap=header == "sweep")
    for row in rows:
        if row.error:
            table.add_row(row.name, Text(row.error, style="red"), "", "", "", row.driver)
            continue
        trials = ", ".join(f"{count} {state.lower()}" for state, count in sorted(row.trials.items()))
        flying = "; ".join(f"#{r['trial']} job {r['job_id']} epoch {r['epoch'] or '-'}" for r in row.running) or "-"
        best = "-" if row.best_value is None else f"{row.best_value:.4f} (#{row.best_trial})"
        table.add_row(row.name, trials or "-", best, str(row.best_params or "-"), flying, row.driver)
    return table


def wide_console() -> Console:
    # Piped output has no terminal width: do not squeeze the table into 80 columns.
    return Console(width=200)


def _fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def render_status(rows) -> Group | Text:
    """A rich table of job statuses, plus why each requeued job was requeued and the reason and
    stderr tail of each failed job.

    Columns: job id, architecture, (seed), SLURM state, node, elapsed, epoch/total, best val
    Dice, val pixel accuracy, peak memory (GiB), seconds per epoch.
    """
    if not rows:
        return Text("no jobs recorded yet")
    table = Table(title=f"experiment {rows[0].experiment}", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    with_seed = len({row.seed for row in rows}) > 1  # one seed: the column says nothing
    headers = ["job", "arch"] + (["seed"] if with_seed else []) + [
        "state", "node", "elapsed", "epoch", "val Dice", "pix acc", "peak mem", "s/epoch"]
    for header in headers:
        # Narrow terminals squeeze the metric columns, never the names that identify a job.
        table.add_column(header, justify="left" if header in ("arch", "state", "node") else "right",
                         no_wrap=header in ("job", "arch", "state", "elapsed"))
    colours = {"COMPLETED": "green", "RUNNING": "cyan", "PENDING": "yellow"}
    for row in rows:
        epoch = "-" if row.epoch is None else f"{row.epoch}/{row.epochs_total or '?'}"
        state = Text(row.state, style=colours.get(row.state, "red" if row.state in PROBLEM_STATES else ""))
        memory = None if row.peak_memory_mb is None else row.peak_memory_mb / 1024
        cells = [row.job_id, row.arch] + ([str(row.seed)] if with_seed else []) + [
            state, row.node or "-", row.elapsed or "-", epoch, _fmt(row.best_val_dice, ".4f"),
            _fmt(row.pixel_accuracy, ".4f"), _fmt(memory, ".2f", "G"), _fmt(row.epoch_seconds, ".1f")]
        # Plain text, not markup: a name with brackets shows as it is, and 200 rows render sooner.
        table.add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in cells))
    parts: list = [table]
    for row in rows:
        if row.requeues:
            parts.append(Text(f"{row.job_id} {row.arch} requeued {len(row.requeues)}x (each attempt resumes "
                              f"from the last checkpoint): {'; '.join(row.requeues)}", style="yellow"))
        if row.state in PROBLEM_STATES:
            parts.append(Text(f"{row.job_id} {row.arch} {row.state}: {row.reason or 'no reason given'}",
                              style="bold red"))
            parts.extend(Text("    " + line, style="dim") for line in row.stderr_tail)
    return Group(*parts)


def watch_jobs(experiment: str | None, index, interval: float) -> list:
    """Show the status table until every job has ended; the jobs' last status rows.

    Args:
        experiment: its name; None: the most recently launched one.
    """
    if experiment is None:
        names = index.experiments()
        experiment = names[0] if names else None
    handles = handles_of(experiment, index) if experiment else []
    out = console if console.is_terminal else wide_console()
    with Live(console=out, auto_refresh=False) as live:
        def redraw(rows: list) -> None:
            live.update(render_status(rows), refresh=True)

        if not handles:
            redraw([])
            return []
        return wait(handles, poll_s=interval, on_poll=redraw, with_progress=True)
