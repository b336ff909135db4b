"""CLI commands ``sweep NAME`` and ``sweep report NAME`` (registered on the root group)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.table import Table

from steelseg_hpc import launch, report, sweeps
from steelseg_hpc.cli._app import console, err_console, main
from steelseg_hpc.cli._options import index_option, storage_option
from steelseg_hpc.compute.profiles import find_profile
from steelseg_hpc.sweeps.config import find_sweep

class _SweepGroup(click.Group):
    """``sweep NAME ...`` runs a sweep; ``sweep report NAME`` reports on one."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@main.group(cls=_SweepGroup)
def sweep() -> None:
    """Optuna sweeps whose trials are jobs: `sweep NAME` runs sweeps/NAME.toml; `sweep report NAME`.

    NAME finds ./sweeps/NAME.toml here or above, else the one shipped with steelseg-hpc (lora-rank,
    batch-lr); `sweep NAME --dry-run` says which file it is.

    One driver process owns the study, keeps --parallel trials in flight as jobs, reports each
    epoch to the pruner and stops pruned jobs at their next step. Run the same command again to
    re-attach after the driver was stopped (logout, reboot): running jobs are followed, ended ones
    told, nothing is submitted twice. A sweep with failed points exits 1 (bad input exits 2);
    `sweep NAME --retry-failed` runs the failed points again.
    """


@sweep.command("run", hidden=True)
@click.argument("name")
@click.option("--trials", type=click.IntRange(1), help="Trials to run (default: the sweep file's).")
@click.option("--parallel", type=click.IntRange(1), help="Trials in flight at once.")
@click.option("--profile", metavar="NAME|PATH",
              help="Cluster profile for the trial jobs (default: the sweep file's); a name finds "
                   "./launch/NAME.toml here or above, else the one shipped with steelseg-hpc.")
@storage_option
@click.option("--store", type=click.Path(path_type=Path), help="The prepared store (replaces the sweep file's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override the base run config of every trial, e.g. --set model.variant=tiny.")
@click.option("--dry-run", is_flag=True, help="Print the trials and their resources; submit nothing.")
@click.option("--detach", is_flag=True, help="Run the driver itself as a job of the profile (no GPU) and return.")
@click.option("--retry-failed", is_flag=True,
              help="Give every point whose trials all failed one more trial (after fixing the cause).")
@click.option("--new-study", is_flag=True,
              help="Start a new study where the storage has none but runs/NAME holds trial directories of an "
                   "old one (its journal deleted or emptied); they are moved to runs/NAME/previous-TIME/.")
@index_option
def run(name, trials, parallel, profile, storage, store, overrides, dry_run, detach, retry_failed, new_study,
        index_path) -> None:
    """Run (or re-attach to) the sweep NAME (./sweeps/NAME.toml here or above, else shipped; or a path).

    Exits 1 when points failed (their trials' jobs died, retries too): a line says how many and
    where their logs are; fix the cause and run the same command with --retry-failed.
    """
    options = {"profile": profile, "overrides": list(overrides), "trials": trials, "parallel": parallel,
               "storage": storage, "store": store, "retry_failed": retry_failed, "new_study": new_study,
               "index": launch.ExperimentIndex(index_path)}
    driver = sweeps.SweepDriver.from_files(name, echo=lambda line: console.print(line, highlight=False), **options)
    if dry_run:
        for found in (find_sweep(name), find_profile(profile or driver.spec.profile)):
            console.print(found.describe(), highlight=False)
        _print_plan(driver)
        return
    sweeps.check_no_driver(driver.spec.name, driver.folder, options["index"])
    if detach:
        _detach(driver, options)
        return
    console.print(f"sweep {driver.spec.name}: {len(driver.slots)} trials, {driver.spec.parallel} at once, "
                  f"on {driver.profile.executor} ({driver.profile_file}); "
                  f"study in {sweeps.display_url(driver.storage_url)}", highlight=False)
    summary = driver.run()
    best = summary["best"]
    done = ", ".join(f"{count} {state.lower()}" for state, count in sorted(summary["trials"].items()))
    line = f"{'[bold red]ended' if summary['failed'] else '[bold green]done'}[/] sweep {driver.spec.name}: {done}"
    if best:
        line += f"; best {driver.spec.objective.metric} {best['value']:.4f} (trial {best['number']}, {best['params']})"
    console.print(line + f"; steelseg-hpc sweep report {driver.spec.name}", highlight=False)
    if summary["failed"]:
        failed = sweeps.failure_line(driver.spec.name, summary["failed"], summary["points"])
        err_console.print(f"[bold red]error:[/] {failed}", highlight=False)
        sys.exit(1)


def _print_plan(driver) -> None:
    profile = driver.profile
    table = Table(title=f"sweep {driver.spec.name}: {len(driver.slots)} trials, {driver.spec.parallel} at once "
                        f"({driver.spec.sampler.kind} sampler)", title_justify="left")
    names = [*driver.spec.space, "seed"]
    for column in ["slot", *names, "run-config overrides"]:
        table.add_column(column)
    for row in driver.plan():
        overrides = " ".join(row["overrides"]) if row["overrides"] is not None else "(decided when it starts)"
        table.add_row(str(row["slot"]), *[str(row["params"].get(n)) for n in names], overrides)
    console.print(table)
    console.print(f"each trial: one job on {profile.executor}"
                  f"{' partition ' + profile.partition if profile.partition else ''}, "
                  f"{profile.gpus_per_node} GPU(s) x {profile.nodes} node(s), {profile.mem_gb:g} GB, "
                  f"{profile.time_min} min; nothing was submitted", highlight=False)


def _detach(driver, options: dict) -> None:
    row = sweeps.detach_driver(driver, options)
    console.print(f"sweep {driver.spec.name}: driver submitted as job {row.job_id} ({row.executor}); "
                  f"its log: {row.stdout}; watch it with: steelseg-hpc status {driver.spec.name}",
                  highlight=False)


@sweep.command("report")
@click.argument("name")
@storage_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the plots and summary.json (default: runs/NAME/report).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@index_option
def report_command(name, storage, out, as_json, index_path) -> None:
    """Plots and a summary of the sweep NAME: Dice vs rank, or batch x lr with B_simple and B_crit."""
    study, folder = _study(name, storage, launch.ExperimentIndex(index_path))
    result = report.sweep_report(study, out or folder / "report")
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    report.print_sweep_report(result, console)


def _study(name: str, storage: str | None, index):
    """The sweep's study and folder (see :func:`steelseg_hpc.sweeps.locate_study`)."""
    where = sweeps.locate_study(name, storage, index)
    return sweeps.load_existing_study(where.name, sweeps.open_storage(where.storage)), where.folder
