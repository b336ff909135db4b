"""CLI command ``launch``: check an experiment and a profile, then queue its jobs (or --dry-run)."""
from __future__ import annotations

import sys

import click
from rich import box
from rich.table import Table

from steelseg_hpc import launch as launch_stage
from steelseg_hpc.cli._app import console, err_console, main
from steelseg_hpc.cli._options import index_option
from steelseg_hpc.cli.status import watch_jobs, wide_console
from steelseg_hpc.compute.profiles import find_profile


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
@index_option
def launch(experiment, profile, overrides, profile_overrides, wait, dry_run, index_path) -> None:
    """Submit EXPERIMENT: one training job per architecture x seed.

    On SLURM the jobs form one job array. EXPERIMENT is a TOML path or a name: smoke finds
    ./launch/experiments/smoke.toml here or above, else the one shipped with steelseg-hpc
    (shipped: smoke, metaldam, metaldam-cpu, metaldam-skip-order); --dry-run says which file each name is.
    """
    if dry_run:
        for found in (launch_stage.find_experiment(experiment), find_profile(profile)):
            console.print(found.describe(), highlight=False)
        loaded, cluster, jobs = launch_stage.plan_launch(experiment, profile, list(overrides), list(profile_overrides))
        (console if console.is_terminal else wide_console()).print(render_plan(loaded.name, cluster, jobs))
        console.print(f"nothing submitted; without --dry-run these {len(jobs)} job(s) are queued", highlight=False)
        return
    rows = launch_stage.launch_experiment(experiment, profile, list(overrides), list(profile_overrides),
                             launch_stage.ExperimentIndex(index_path))
    for row in rows:
        console.print(f"submitted [bold]{row.arch}[/] seed {row.seed}: job {row.job_id} -> {row.run_dir}")
    if wait:
        ended = watch_jobs(rows[0].experiment, launch_stage.ExperimentIndex(index_path), interval=5.0)
        failed = [row for row in ended if row.state != "COMPLETED"]
        if failed:
            listed = ", ".join(f"{row.job_id} {row.arch} seed {row.seed} {row.state}" for row in failed)
            err_console.print(f"[bold red]error:[/] {len(failed)} of {len(ended)} job(s) did not complete: {listed}",
                              highlight=False)
            sys.exit(1)
