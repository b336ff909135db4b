"""CLI commands: launch, status, logs, cancel (registered on the root group)."""
from __future__ import annotations

import json
import sys
import time
from collections import Counter

import click
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from steelseg_hpc import launch as launch_stage
from steelseg_hpc import sweeps
from steelseg_hpc.cli._app import console, err_console, main
from steelseg_hpc.compute.profiles import find_profile
from steelseg_hpc.compute.slurm import TERMINAL_STATES
from steelseg_hpc.launch.status import PROBLEM_STATES

_index_option = click.option(
    "--index", "index_path", type=click.Path(dir_okay=False), default=None,
    help="Experiment index (default: $STEELSEG_INDEX or ~/.local/share/steelseg-hpc/index.sqlite).",
)


def _index(path: str | None):
    return launch_stage.ExperimentIndex(path)


def render_plan(name: str, profile, jobs: list) -> Table:
    """The jobs ``launch --dry-run`` would queue, with what each asks of the cluster."""
    where = (f"SLURM partition {profile.partition or '(default)'}" if profile.executor == "slurm"
             else "this machine (local executor)")
    resources = (f"{profile.nodes} node(s) × {profile.tasks()} task(s), {profile.gpus_per_node} GPU/node, "
                 f"{profile.cpus_per_task} CPU/task, {profile.mem_gb:g} GB/node, {profile.time_min} min, "
                 f"{profile.max_requeues} requeues")
    table = Table(title=f"experiment {name} → {where}\n{resources}", box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("arch", "seed", "epochs", "batch", "precision", "run dir", "now"):
        table.add_column(column)
    ranks = profile.world_size()
    for job in jobs:
        config = job.config
        batch = f"{config.micro_batch * config.grad_accumulation * ranks} = {config.micro_batch} micro × " \
                f"{config.grad_accumulation} accum × {ranks} rank(s)"
        table.add_row(job.run.arch, str(job.run.seed), str(config.epochs), batch, config.precision,
                      str(job.run.run_dir), job.resume.describe())
    return table


@main.command()
@click.argument("experiment", metavar="EXPERIMENT")
@click.option("--profile", required=True, metavar="NAME|PATH",
              help="Cluster profile: a name (local-cluster finds ./launch/local-cluster.toml here or above, "
                   "else the one shipped with steelseg-hpc) or a TOML path.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override an experiment field, e.g. --set store=demo/store.zarr.")
@click.option("--profile-set", "profile_overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a profile field, e.g. --profile-set time_min=30.")
@click.option("--wait", is_flag=True, help="Show the status table until every job has ended; exit 1 if one did not complete.")
@click.option("--dry-run", is_flag=True,
              help="Check the profile against the cluster and every run config; print the jobs; queue nothing.")
@_index_option
def launch(experiment, profile, overrides, profile_overrides, wait, dry_run, index_path) -> None:
    """Submit EXPERIMENT: one training job per architecture x seed.

    On SLURM the jobs form one job array. EXPERIMENT is a TOML path or a name: smoke finds
    ./launch/experiments/smoke.toml here or above, else the one shipped with steelseg-hpc
    (shipped: smoke, metaldam, metaldam-skip-order); --dry-run says which file each name is.
    """
    if dry_run:
        for found in (launch_stage.find_experiment(experiment), find_profile(profile)):
            console.print(found.describe(), highlight=False)
        loaded, cluster, jobs = launch_stage.plan_launch(experiment, profile, list(overrides), list(profile_overrides))
        (console if console.is_terminal else wide_console()).print(render_plan(loaded.name, cluster, jobs))
        console.print(f"nothing submitted; without --dry-run these {len(jobs)} job(s) are queued", highlight=False)
        return
    rows = launch_stage.launch_experiment(experiment, profile, list(overrides), list(profile_overrides),
                             _index(index_path))
    for row in rows:
        console.print(f"submitted [bold]{row.arch}[/] seed {row.seed}: job {row.job_id} -> {row.run_dir}")
    if wait:
        ended = _watch(rows[0].experiment, _index(index_path), interval=5.0)
        failed = [row for row in ended if row.state != "COMPLETED"]
        if failed:
            listed = ", ".join(f"{row.job_id} {row.arch} seed {row.seed} {row.state}" for row in failed)
            err_console.print(f"[bold red]error:[/] {len(failed)} of {len(ended)} job(s) did not complete: {listed}",
                              highlight=False)
            sys.exit(1)


@main.command()
@click.argument("experiment", required=False)
@click.option("--watch", is_flag=True, help="Refresh until every job has ended.")
@click.option("--json", "as_json", is_flag=True, help='Print JSON instead: {"jobs": [...], "sweeps": [...]}.')
@click.option("--interval", default=5.0, show_default=True, help="Seconds between refreshes.")
@_index_option
def status(experiment, watch, as_json, interval, index_path) -> None:
    """Show the jobs of EXPERIMENT (or sweep): state, progress, metrics; and the sweeps.

    Without EXPERIMENT, the most recently launched one, and every sweep.
    """
    if watch and as_json:
        raise click.UsageError("--watch refreshes a table and --json prints once: choose one")
    if interval <= 0:
        raise click.BadParameter(f"{interval}: expected seconds > 0", param_hint="--interval")
    index = _index(index_path)
    if watch:
        _watch(experiment, index, interval)
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


@main.command()
@click.argument("job_id")
@click.option("--tail", "lines", type=int, default=None, help="Only the last N lines of each.")
@_index_option
def logs(job_id, lines, index_path) -> None:
    """Print the stdout and stderr of JOB_ID."""
    out = launch_stage.job_logs(job_id, _index(index_path), lines)
    for name in ("stdout", "stderr"):
        console.rule(f"{name}: {out[name + '_path']}", style="dim")
        click.echo(out[name])


@main.command()
@click.argument("target")
@click.option("--signal", "signal_name", default=None, metavar="NAME",
              help="Only send a signal (USR2 = checkpoint and requeue) instead of cancelling.")
@_index_option
def cancel(target, signal_name, index_path) -> None:
    """Cancel an experiment's jobs, or one job.

    TARGET is an experiment name or a job id.
    """
    outcome = launch_stage.cancel(target, _index(index_path), signal_name)
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


def wide_console() -> Console:
    # Piped output has no terminal width: do not squeeze the table into 80 columns.
    return Console(width=200)


def _fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def render_status(rows) -> Group | Text:
    """A rich table of job statuses, plus the reason and stderr tail of each failed job.

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
        if row.state in PROBLEM_STATES:
            parts.append(Text(f"{row.job_id} {row.arch} {row.state}: {row.reason or 'no reason given'}",
                              style="bold red"))
            parts.extend(Text("    " + line, style="dim") for line in row.stderr_tail)
    return Group(*parts)


def _watch(experiment, index, interval: float) -> list:
    """Show the status table until every job has ended; the jobs' last status rows."""
    out = console if console.is_terminal else wide_console()
    with Live(console=out, auto_refresh=False) as live:
        while True:
            rows = launch_stage.collect_status(experiment, index)
            live.update(render_status(rows), refresh=True)
            if rows and all(row.state in TERMINAL_STATES for row in rows):
                return rows
            time.sleep(interval)
