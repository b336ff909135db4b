"""Sweeps end to end with real jobs: local executor and the real local SLURM, journal and MariaDB.

Every trial is a real training job (tiny SAM or tiny U-Net on the tiny store); nothing is mocked.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState
from PIL import Image
from sqlalchemy.engine import make_url

from steelseg_hpc.cli import main
from steelseg_hpc.core.rundir import read_final, read_metrics
from steelseg_hpc.launch import ExperimentIndex
from steelseg_hpc.sweeps.driver import RETRY_PLANNED, SweepDriver
from steelseg_hpc.sweeps.study import display_url, open_storage, open_study
from tests.launch.conftest import sacct_states

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "launch" / "local.toml"
LOCAL_CLUSTER = REPO / "launch" / "local-cluster.toml"
TINY = ['"epochs=2"', '"data.num_workers=0"', '"data.max_train_tiles=8"', '"micro_batch=2"',
        '"grad_accumulation=2"', '"progress=false"', '"precision=\\"fp32\\""', '"data.pin_memory=false"']


def write_sweep(folder: Path, name: str, store: Path, arch: str, space: str, extra: str = "",
                overrides: tuple[str, ...] = (), profile: Path = LOCAL) -> Path:
    lines = [f'name = "{name}"', f'store = "{store}"', f'profile = "{profile}"', f'runs_root = "{folder}"',
             "parallel = 2", extra, "[base]", f'arch = "{arch}"', f"overrides = [{', '.join([*TINY, *overrides])}]",
             space]
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


SAM = ('"model.variant=\\"tiny\\""', '"model.prompt=\\"none\\""')
RANKS = "[pruner]\nkind = \"none\"\n[space.rank]\nkey = \"model.rank\"\nvalues = [0, 4, 8, 16]\n"


def study_of(name: str, storage: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def sweep(*args, index: Path) -> object:
    result = CliRunner().invoke(main, ["sweep", *map(str, args)], env={"STEELSEG_INDEX": str(index)},
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def rank_sweep(tiny_store, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rank-sweep")
    index = folder / "index.sqlite"
    path = write_sweep(folder, "rank", tiny_store, "sam-lora", RANKS, overrides=SAM)
    first = sweep(path, index=index)
    return {"path": path, "folder": folder, "index": index, "storage": str(folder / "rank" / "study.journal"),
            "output": first.output}


@pytest.mark.slow
def test_a_lora_rank_sweep_completes_with_its_user_attributes(rank_sweep):
    study = study_of("rank", rank_sweep["storage"])
    trials = study.get_trials()
    assert sorted(t.params["rank"] for t in trials) == [0, 4, 8, 16]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    for trial in trials:
        attrs = trial.user_attrs
        assert Path(attrs["run_dir"]).is_dir() and attrs["job_id"].isdigit()
        assert attrs["trainable_params"] > 0 and attrs["peak_memory_mb"] > 0 and attrs["seconds_per_epoch"] > 0
        assert attrs["cost"] > 0 and attrs["cost_unit"] == "CPU core-hours" and attrs["epochs_done"] == 2 and attrs["stop_reason"] == "completed"
        assert len(attrs["noise_scale_b_simple"]) == 2
        assert trial.value == max(row.val_dice for row in read_metrics(attrs["run_dir"]))
    full = next(t for t in trials if t.params["rank"] == 0).user_attrs["trainable_params"]
    assert all(t.user_attrs["trainable_params"] < full for t in trials if t.params["rank"] > 0)
    assert "done sweep rank: 4 complete" in rank_sweep["output"]


@pytest.mark.slow
def test_rerunning_a_sweep_continues_its_study_without_duplicates(rank_sweep):
    sweep(rank_sweep["path"], index=rank_sweep["index"])
    assert len(study_of("rank", rank_sweep["storage"]).get_trials()) == 4
    assert len(ExperimentIndex(rank_sweep["index"]).jobs("rank", latest_only=False)) == 4


@pytest.mark.slow
def test_status_lists_the_sweep_and_report_writes_plots(rank_sweep, tmp_path):
    env = {"STEELSEG_INDEX": str(rank_sweep["index"])}
    status = CliRunner().invoke(main, ["status", "--json"], env=env)
    assert status.exit_code == 0, status.output
    (entry,) = json.loads(status.output)["sweeps"]
    assert entry["name"] == "rank" and entry["trials"] == {"COMPLETE": 4} and entry["best_value"] > 0
    table = CliRunner().invoke(main, ["status"], env=env)
    assert "sweeps" in table.output and "4 complete" in table.output
    report = CliRunner().invoke(main, ["sweep", "report", "rank", "--out", str(tmp_path), "--json"], env=env)
    assert report.exit_code == 0, report.output
    summary = json.loads(report.output)
    assert summary["kind"] == "lora-rank" and [r["rank"] for r in summary["ranks"]] == [0, 4, 8, 16]
    assert json.loads((tmp_path / "summary.json").read_text())["sweep"] == "rank"
    assert {Path(p).name for p in summary["plots"]} >= {"rank.png", "history.png"}
    for plot in summary["plots"]:
        with Image.open(plot) as image:
            image.load()
            assert image.size[0] > 200


@pytest.mark.slow
def test_the_dashboard_serves_the_study_on_loopback(rank_sweep):
    from steelseg_hpc.training.distributed import free_port

    port = free_port()
    env = dict(os.environ, STEELSEG_INDEX=str(rank_sweep["index"]))
    process = subprocess.Popen([sys.executable, "-m", "steelseg_hpc", "dashboard", "rank", "--port", str(port)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as answer:
                    studies = json.loads(answer.read())
                break
            except OSError:
                assert process.poll() is None and time.time() < deadline, process.stdout.read()
                time.sleep(0.5)
        assert "rank" in json.dumps(studies)
    finally:
        process.terminate()
        process.wait(timeout=30)


BAD_LR = ("[pruner]\nkind = \"median\"\nstartup_trials = 1\nwarmup_epochs = 2\n"
          "[space.lr]\nkey = \"optimizer.lr\"\nvalues = [0.01, 1e-9]\n")


@pytest.mark.slow
def test_a_bad_trial_is_pruned_its_job_stops_early_and_is_not_requeued(tiny_store, tmp_path):
    index = tmp_path / "index.sqlite"
    path = write_sweep(tmp_path, "prune", tiny_store, "unet3plus", BAD_LR, extra="",
                       overrides=('"model.base_channels=4"', '"epochs=6"', '"schedule.warmup_epochs=0"'))
    sweep(path, "--parallel", "1", index=index)
    trials = {t.params["lr"]: t for t in study_of("prune", str(tmp_path / "prune" / "study.journal")).get_trials()}
    good, bad = trials[0.01], trials[1e-9]
    assert good.state == TrialState.COMPLETE and bad.state == TrialState.PRUNED
    assert len(read_metrics(bad.user_attrs["run_dir"])) < len(read_metrics(good.user_attrs["run_dir"])) == 6
    assert read_final(bad.user_attrs["run_dir"]).stopped == "stop-request"
    row = ExperimentIndex(index).find_job(bad.user_attrs["job_id"])
    stdout = Path(row.stdout).read_text()
    assert stdout.count("unet3plus seed 0 ->") == 1  # one start: not requeued


@pytest.mark.slow
def test_a_batch_lr_sweep_draws_learning_rates_per_batch_size(tiny_store, tmp_path):
    index = tmp_path / "index.sqlite"
    space = ("[sampler]\nkind = \"random\"\n[pruner]\nkind = \"none\"\n"
             "[space.batch]\nkey = \"global_batch\"\nvalues = [2, 4]\nstratify = true\n"
             "[space.lr]\nkey = \"optimizer.lr\"\nlow = 0.001\nhigh = 0.03\nlog = true\n")
    path = write_sweep(tmp_path, "batch", tiny_store, "unet3plus", space, extra="trials = 4\nmax_micro_batch = 2",
                       overrides=('"model.base_channels=4"', '"model.norm=\\"group\\""'))
    sweep(path, index=index)
    trials = study_of("batch", str(tmp_path / "batch" / "study.journal")).get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.params["batch"] for t in trials) == [2, 2, 4, 4]
    assert len({t.params["lr"] for t in trials}) == 4
    for trial in trials:
        rows = read_metrics(trial.user_attrs["run_dir"])
        assert rows[0].global_batch == trial.params["batch"]
        assert rows[-1].noise_scale_b_simple is not None  # every trial measures B_simple, batch 2 too
    report = CliRunner().invoke(main, ["sweep", "report", "batch", "--json"], env={"STEELSEG_INDEX": str(index)})
    assert report.exit_code == 0, report.output
    summary = json.loads(report.output)
    assert summary["kind"] == "batch-lr" and "b_crit" in summary and set(summary["b_simple"]) == {"2", "4"}
    assert any("Normalisation used: group" in answer for answer in summary["answers"])


@pytest.mark.slow
def test_killing_the_driver_and_rerunning_reattaches_to_its_jobs(tiny_store, tmp_path):
    index = tmp_path / "index.sqlite"
    path = write_sweep(tmp_path, "reattach", tiny_store, "sam-lora", RANKS, overrides=(*SAM, '"epochs=3"'))
    env = dict(os.environ, STEELSEG_INDEX=str(index))
    driver = subprocess.Popen([sys.executable, "-m", "steelseg_hpc", "sweep", str(path)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (index.exists() and ExperimentIndex(index).is_experiment("reattach")
               and ExperimentIndex(index).jobs("reattach")):
        assert driver.poll() is None and time.time() < deadline
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    sweep(path, index=index)
    trials = study_of("reattach", str(tmp_path / "reattach" / "study.journal")).get_trials()
    assert sorted(t.params["rank"] for t in trials) == [0, 4, 8, 16]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    jobs = ExperimentIndex(index).jobs("reattach", latest_only=False)
    assert len(jobs) == 4 and len({job.run_dir for job in jobs}) == 4  # no job twice, no orphan


@pytest.mark.slow
def test_a_journal_deleted_under_the_driver_stops_it_in_one_line_and_a_rerun_reattaches(tiny_store, tmp_path):
    index = tmp_path / "index.sqlite"
    path = write_sweep(tmp_path, "deleted", tiny_store, "sam-lora", RANKS, overrides=(*SAM, '"epochs=3"'))
    journal, out, err = tmp_path / "deleted" / "study.journal", tmp_path / "driver.out", tmp_path / "driver.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        driver = subprocess.Popen([sys.executable, "-m", "steelseg_hpc", "sweep", str(path)], stdout=stdout,
                                  stderr=stderr, env=dict(os.environ, STEELSEG_INDEX=str(index)))
    try:
        deadline = time.time() + 120
        while not (index.exists() and ExperimentIndex(index).is_experiment("deleted")
                   and ExperimentIndex(index).jobs("deleted")):
            assert driver.poll() is None and time.time() < deadline, err.read_text()
            time.sleep(0.2)
        saved = journal.rename(journal.with_suffix(".saved"))  # gone at once: no write lands between
        assert driver.wait(timeout=120) == 2
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert err.read_text().strip() == (f"error: {journal}: the study journal is gone (deleted or moved while in "
                                       "use); the trial jobs keep running: restore it and run the command again "
                                       "to re-attach")
    assert "Traceback" not in out.read_text() and not journal.exists()
    saved.rename(journal)  # restored
    sweep(path, index=index)
    trials = study_of("deleted", str(journal)).get_trials()
    assert sorted(t.params["rank"] for t in trials) == [0, 4, 8, 16]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    jobs = ExperimentIndex(index).jobs("deleted", latest_only=False)
    assert len(jobs) == 4 and len({job.run_dir for job in jobs}) == 4  # its jobs were followed, not rerun


class KilledBeforeItsJobId:
    """A trial whose driver dies after the job is submitted and indexed, before the trial hears of it."""

    def __init__(self, trial):
        self._trial = trial

    def __getattr__(self, name):
        return getattr(self._trial, name)

    def set_user_attr(self, key, value):
        if key != "job_id":
            self._trial.set_user_attr(key, value)


@pytest.mark.slow
def test_every_point_a_killed_driver_can_stop_at_is_picked_up_without_a_second_job(tiny_store, tmp_path):
    index = tmp_path / "index.sqlite"
    space = "[pruner]\nkind = \"none\"\n[space.rank]\nkey = \"model.rank\"\nvalues = [0, 4, 8, 16]\n"
    path = write_sweep(tmp_path, "killed", tiny_store, "sam-lora", space, overrides=(*SAM, '"epochs=1"'))
    driver = SweepDriver.from_files(path, index=ExperimentIndex(index))
    driver.folder.mkdir(parents=True)
    driver.study = study = open_study(driver.spec, open_storage(driver.storage_url, create=True), epochs=1)
    for slot in range(4):
        study.enqueue_trial(driver.space.encode_fixed(driver.slots[slot]), user_attrs={"slot": slot})
    study.ask()  # killed right after ask: no parameters yet
    study.ask().suggest_categorical("seed", list(driver.spec.seeds))  # killed between two suggestions
    third = study.ask()
    driver._submit(KilledBeforeItsJobId(third), 2, driver.space.suggest(third))  # job runs, trial unaware
    fourth = study.ask()
    driver.space.suggest(fourth)
    fourth.set_user_attr(RETRY_PLANNED, True)
    study.tell(fourth, state=TrialState.FAIL)  # killed before its retry was queued
    journal = Path(driver.storage_url)
    with journal.open("ab") as tail:
        tail.write(b'{"op_code":8,"worker_id":"x","trial_id":0,"user_')  # killed mid-append
    os.symlink(journal, f"{journal}.lock")

    result = sweep(path, index=index)
    assert "torn last entry" in result.output and "study.journal.lock" in result.output
    assert "trial 2: following job" in result.output
    trials = study_of("killed", str(journal)).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["rank"] for t in complete) == [0, 4, 8, 16] and len(trials) == 5
    assert next(t for t in complete if t.params["rank"] == 16).user_attrs["retry_of"] == fourth.number
    jobs = ExperimentIndex(index).jobs("killed", latest_only=False)
    assert len(jobs) == 4 and len({job.run_dir for job in jobs}) == 4


def test_bad_sweep_input_is_one_line_and_queues_nothing(tiny_store, tmp_path):
    index = tmp_path / "index.sqlite"
    env = {"STEELSEG_INDEX": str(index)}
    unknown = CliRunner().invoke(main, ["sweep", "no-such-sweep"], env=env)
    assert unknown.exit_code == 2 and "unknown sweep 'no-such-sweep'" in unknown.output
    assert "lora-rank" in unknown.output  # the known ones are listed
    path = write_sweep(tmp_path, "bad", tiny_store, "sam-lora", RANKS, overrides=SAM)
    storage = CliRunner().invoke(main, ["sweep", str(path), "--storage", "mysql+pymysql://u:secret@127.0.0.1:9/x"],
                                 env=env)
    assert storage.exit_code == 2 and "cannot be reached" in storage.output and "secret" not in storage.output
    for bad in (["--set", "model.rank=-3"], ["--store", str(tmp_path / "missing.zarr")]):
        result = CliRunner().invoke(main, ["sweep", str(path), *bad], env=env)
        assert result.exit_code == 2, (bad, result.output)
    assert not index.exists() or not ExperimentIndex(index).jobs()


@pytest.mark.slow
@pytest.mark.slurm
def test_on_slurm_trials_run_side_by_side_and_a_killed_job_is_retried(slurm_cluster, tiny_store, tmp_path):
    index = tmp_path / "index.sqlite"
    space = "[pruner]\nkind = \"none\"\n[space.rank]\nkey = \"model.rank\"\nvalues = [4, 8]\n"
    path = write_sweep(tmp_path, "onslurm", tiny_store, "sam-lora", space, overrides=(*SAM, '"epochs=6"'),
                       profile=LOCAL_CLUSTER)
    env = dict(os.environ, STEELSEG_INDEX=str(index))
    driver = subprocess.Popen([sys.executable, "-m", "steelseg_hpc", "sweep", str(path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180
    while not (index.exists() and ExperimentIndex(index).is_experiment("onslurm")
               and len(ExperimentIndex(index).jobs("onslurm")) == 2):
        assert driver.poll() is None and time.time() < deadline
        time.sleep(0.3)
    first = ExperimentIndex(index).jobs("onslurm")[0]
    while not read_metrics(first.run_dir):
        assert time.time() < deadline
        time.sleep(0.3)
    subprocess.run(["scancel", first.job_id], check=True)
    output, _ = driver.communicate(timeout=400)
    assert driver.returncode == 0, output
    trials = study_of("onslurm", str(tmp_path / "onslurm" / "study.journal")).get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and "CANCELLED" in failed[0].user_attrs["fail_reason"]
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == failed[0].number)
    assert retry.state == TrialState.COMPLETE and retry.params == failed[0].params
    assert sorted(t.params["rank"] for t in trials if t.state == TrialState.COMPLETE) == [4, 8]
    jobs = ExperimentIndex(index).jobs("onslurm", latest_only=False)
    spans = [_span(job.job_id) for job in jobs]
    assert any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:])  # side by side
    assert "CANCELLED" in sacct_states(first.job_id)[0]


def _span(job_id: str) -> tuple[str, str]:
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", job_id, "-o", "Start,End"], capture_output=True,
                         text=True, check=True).stdout.split()[0]
    start, end = out.split("|")
    return start, end


@pytest.mark.slow
@pytest.mark.slurm
def test_a_sweep_on_the_local_mariadb(slurm_cluster, tiny_store, tmp_path):
    url_file = Path(os.environ.get("STEELSEG_SLURM_HOME", "/var/tmp/steelseg-slurm")) / "optuna-storage-url"
    url = url_file.read_text().strip()
    name = f"rdb{os.getpid()}"
    space = "[pruner]\nkind = \"none\"\n[space.rank]\nkey = \"model.rank\"\nvalues = [4]\n"
    path = write_sweep(tmp_path, name, tiny_store, "sam-lora", space, overrides=SAM)
    result = sweep(path, "--storage", url, index=tmp_path / "index.sqlite")
    password = make_url(url).password
    assert password and password not in result.output and f"study in {display_url(url)}" in result.output
    study = optuna.load_study(study_name=name, storage=url)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]
    assert not (tmp_path / name / "study.journal").exists()
    optuna.delete_study(study_name=name, storage=url)


@pytest.mark.slow
def test_dry_run_prints_the_trials_and_detach_runs_the_driver_as_a_job(tiny_store, tmp_path):
    index = tmp_path / "index.sqlite"
    space = "[pruner]\nkind = \"none\"\n[space.rank]\nkey = \"model.rank\"\nvalues = [4, 8]\n"
    path = write_sweep(tmp_path, "detached", tiny_store, "sam-lora", space, overrides=SAM)
    dry = sweep(path, "--dry-run", index=index)
    assert "model.rank=4 seed=0" in dry.output and "model.rank=8 seed=0" in dry.output
    assert "nothing was submitted" in dry.output and not (tmp_path / "detached").exists()
    detached = sweep(path, "--detach", index=index)
    assert "driver submitted as job" in detached.output
    deadline = time.time() + 240
    storage = str(tmp_path / "detached" / "study.journal")
    while True:
        trials = study_of("detached", storage).get_trials() if Path(storage).exists() else []
        if len(trials) == 2 and all(t.state == TrialState.COMPLETE for t in trials):
            break
        assert time.time() < deadline, [t.state for t in trials]
        time.sleep(1)


@pytest.mark.slow
def test_a_sweep_whose_points_failed_exits_1_and_retry_failed_runs_them_again(tiny_store, tmp_path):
    import torch

    from steelseg_hpc.models.sam_build import build_sam

    index = tmp_path / "index.sqlite"
    weights = tmp_path / "sam_tiny.pth"  # missing: every trial's job dies loading it
    space = "[pruner]\nkind = \"none\"\n[space.rank]\nkey = \"model.rank\"\nvalues = [4, 8]\n"
    path = write_sweep(tmp_path, "failing", tiny_store, "sam-lora", space, extra="retries = 0",
                       overrides=(*SAM, '"epochs=1"', f'"model.checkpoint=\\"{weights}\\""'))
    env = {"STEELSEG_INDEX": str(index)}
    failed = CliRunner().invoke(main, ["sweep", str(path)], env=env)
    assert failed.exit_code == 1, failed.output
    assert "2 of 2 point(s) failed" in failed.output and "--retry-failed" in failed.output
    log = ExperimentIndex(index).jobs("failing")[0].stderr
    assert log in failed.output and "does not exist" in Path(log).read_text()
    again = CliRunner().invoke(main, ["sweep", str(path)], env=env)  # nothing to run, still failed
    assert again.exit_code == 1 and "2 of 2 point(s) failed" in again.output
    torch.save(build_sam("tiny").state_dict(), weights)  # the cause, fixed
    retried = sweep(path, "--retry-failed", index=index)
    trials = study_of("failing", str(tmp_path / "failing" / "study.journal")).get_trials()
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    assert sorted(t.params["rank"] for t in trials if t.state == TrialState.COMPLETE) == [4, 8]
    assert "done sweep failing: 2 complete, 2 fail" in retried.output
    help_text = CliRunner().invoke(main, ["sweep", "run", "--help"]).output
    assert "--retry-failed" in help_text and "Exits 1" in help_text


@pytest.fixture(scope="module")
def other_store(tmp_path_factory) -> Path:
    """A prepared store of other content than ``tiny_store`` (another synthetic draw)."""
    from steelseg_hpc.data import load_spec, prepare
    from steelseg_hpc.data.synth import make_synthetic_dataset

    folder = tmp_path_factory.mktemp("other-store")
    spec = make_synthetic_dataset(folder / "raw", groups=(3, 3, 3), size=(128, 112), seed=1, tile_size=64, copies=0)
    prepare(load_spec(spec), folder / "other.zarr", workers=0)
    return folder / "other.zarr"


@pytest.mark.slow
def test_a_sweep_records_its_store_and_refuses_another(tiny_store, other_store, tmp_path):
    index = tmp_path / "index.sqlite"
    space = "[pruner]\nkind = \"none\"\n[space.rank]\nkey = \"model.rank\"\nvalues = [4]\n"
    path = write_sweep(tmp_path, "onestore", tiny_store, "sam-lora", space, overrides=(*SAM, '"epochs=1"'))
    sweep(path, index=index)
    storage = str(tmp_path / "onestore" / "study.journal")
    recorded = study_of("onestore", storage).user_attrs["store"]
    assert recorded["path"] == str(tiny_store) and recorded["spec_hash"]
    env = {"STEELSEG_INDEX": str(index)}
    for extra in ([], ["--detach"]):
        refused = CliRunner().invoke(main, ["sweep", str(path), "--store", str(other_store), "--trials", "2", *extra],
                                     env=env)
        assert refused.exit_code == 2, (extra, refused.output)
        (error,) = [line for line in refused.output.splitlines() if line.startswith("error:")]
        assert "is not the store sweep onestore was run on" in error and "Traceback" not in refused.output
    assert len(study_of("onestore", storage).get_trials()) == 1
    assert not (tmp_path / "onestore" / "driver").exists()  # no driver job was submitted
    alias = tmp_path / "alias.zarr"
    alias.symlink_to(tiny_store)
    sweep(path, "--store", alias, index=index)  # the same store by another path is the same store
    assert len(study_of("onestore", storage).get_trials()) == 1


@pytest.mark.slow
def test_a_grid_sweep_never_runs_a_point_twice_and_the_report_pools_a_seed_once(tiny_store, tmp_path):
    index = tmp_path / "index.sqlite"
    space = "[pruner]\nkind = \"none\"\n[space.rank]\nkey = \"model.rank\"\nvalues = [4, 8]\n"
    path = write_sweep(tmp_path, "grid", tiny_store, "sam-lora", space, overrides=SAM)
    dry = sweep(path, "--trials", "5", "--dry-run", index=index)
    assert "trials 5 exceeds the grid (2 point(s) x 1 seed(s)): running 2" in dry.output
    assert "sweep grid: 2 trials" in dry.output and dry.output.count("seed=0") == 2
    # a study from before the cap (or another driver) holding the same point and seed twice
    storage = str(tmp_path / "grid" / "study.journal")
    study = optuna.create_study(study_name="grid", storage=open_storage(storage, create=True), direction="maximize")
    study.set_user_attr("sweep", {"space": {"rank": "model.rank"}, "metric": "val_dice", "seeds": [0]})
    distributions = {"seed": optuna.distributions.CategoricalDistribution([0, 1]),
                     "rank": optuna.distributions.CategoricalDistribution([4, 8])}
    for rank, seed, value in ((4, 0, 0.30), (4, 0, 0.20), (4, 1, 0.40), (8, 0, 0.5)):
        study.add_trial(optuna.trial.create_trial(params={"seed": seed, "rank": rank}, distributions=distributions,
                                                  value=value, user_attrs={"slot": 0}))
    report = CliRunner().invoke(main, ["sweep", "report", str(path), "--storage", storage, "--json",
                                       "--out", str(tmp_path / "report")], env={"STEELSEG_INDEX": str(index)})
    assert report.exit_code == 0, report.output
    summary = json.loads(report.output)
    four = next(row for row in summary["ranks"] if row["rank"] == 4)
    assert four["n"] == 2 and four["mean"] == pytest.approx(0.35)  # seeds 0 and 1, seed 0 once
    point = next(p for p in summary["points"] if p["params"] == {"rank": 4})
    assert point["trials"] == [0, 2] and point["duplicates"] == [1]
    assert any("trial 1 repeats {'rank': 4} with seed 0 (trial 0)" in note for note in summary["notes"])
    table = CliRunner().invoke(main, ["sweep", "report", str(path), "--storage", storage,
                                      "--out", str(tmp_path / "report")], env={"STEELSEG_INDEX": str(index)})
    assert "note: trial 1 repeats" in table.output


@pytest.mark.slow
def test_a_second_driver_is_refused_while_a_detached_one_runs(tiny_store, tmp_path):
    index = tmp_path / "index.sqlite"
    space = "[pruner]\nkind = \"none\"\n[space.rank]\nkey = \"model.rank\"\nvalues = [4]\n"
    path = write_sweep(tmp_path, "onedriver", tiny_store, "sam-lora", space, overrides=(*SAM, '"epochs=1"'))
    first = sweep(path, "--detach", index=index)
    job_id = first.output.split("driver submitted as job ")[1].split()[0]
    env = {"STEELSEG_INDEX": str(index)}
    for extra in (["--detach"], []):
        refused = CliRunner().invoke(main, ["sweep", str(path), *extra], env=env)
        assert refused.exit_code == 2, (extra, refused.output)
        assert "its driver is" in refused.output and "Traceback" not in refused.output
        assert job_id in refused.output or "its driver is running (pid" in refused.output
    storage = str(tmp_path / "onedriver" / "study.journal")
    deadline = time.time() + 240
    while not (Path(storage).exists() and [t.state for t in study_of("onedriver", storage).get_trials()]
               == [TrialState.COMPLETE]):
        assert time.time() < deadline
        time.sleep(1)
    jobs = [p.name for p in (tmp_path / "onedriver" / "driver").iterdir() if p.name.isdigit()]
    assert jobs == [job_id]  # one driver job (the local executor keeps a folder per job)


@pytest.mark.slow
def test_a_lost_journal_does_not_start_a_new_study_over_the_old_trials_without_new_study(tiny_store, tmp_path):
    index = tmp_path / "index.sqlite"
    space = "[pruner]\nkind = \"none\"\n[space.rank]\nkey = \"model.rank\"\nvalues = [4]\n"
    path = write_sweep(tmp_path, "lost", tiny_store, "sam-lora", space, overrides=(*SAM, '"epochs=1"'))
    sweep(path, index=index)
    journal = tmp_path / "lost" / "study.journal"
    old_final = (tmp_path / "lost" / "trial0000" / "final.json").read_text()
    env = {"STEELSEG_INDEX": str(index)}
    for lose in (lambda: journal.write_bytes(b""), journal.unlink):  # emptied, then deleted
        lose()
        for extra in ([], ["--detach"]):
            refused = CliRunner().invoke(main, ["sweep", str(path), *extra], env=env)
            assert refused.exit_code == 2, (extra, refused.output)
            assert "has 1 trial run directories (trial0000, ...)" in refused.output and "--new-study" in refused.output
    assert len(ExperimentIndex(index).jobs("lost", latest_only=False)) == 1  # nothing was submitted
    assert not (tmp_path / "lost" / "driver").exists()
    fresh = sweep(path, "--new-study", index=index)
    (aside,) = (tmp_path / "lost").glob("previous-*")
    assert f"old trial run directories are in {aside}" in fresh.output
    assert (aside / "trial0000" / "final.json").read_text() == old_final
    (trial,) = study_of("lost", str(journal)).get_trials()
    assert trial.state == TrialState.COMPLETE
    assert (tmp_path / "lost" / "trial0000" / "final.json").read_text() != old_final  # trained anew
    assert "--new-study" in CliRunner().invoke(main, ["sweep", "run", "--help"]).output
