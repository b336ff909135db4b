"""``launch``, ``launch --dry-run`` and the job agree on what an existing run dir will do."""
from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from steelseg_hpc.cli import main
from steelseg_hpc.core import rundir
from steelseg_hpc.core.errors import ConfigError, DataError, TrainingError
from steelseg_hpc.core.rundir import FinalSummary, MetricsRow, RunFiles, RunInfo
from steelseg_hpc.launch import submit_experiment
from steelseg_hpc.launch.submit import plan_experiment
from steelseg_hpc.compute.profiles import ClusterProfile, load_profile

from .conftest import REPO, SMOKE

LOCAL = REPO / "launch" / "local.toml"


def _earlier_run(tiny_store, tmp_path, epochs_done: int, stopped: str | None, world_size: int = 1,
                 **config_changes):
    """Write the unet3plus-s0 run dir that the smoke experiment would train, as an earlier run left it."""
    from steelseg_hpc.launch.config import load_experiment

    experiment = load_experiment(SMOKE, [f"store={tiny_store}", f"runs_root={tmp_path}",
                                         "architectures=['unet3plus']", "seeds=[0]"])
    (job,) = plan_experiment(experiment, ClusterProfile(executor="local"))
    files = RunFiles(job.run.run_dir)
    files.path.mkdir(parents=True)
    files.config.write_text(job.config.model_copy(update=config_changes).to_toml())
    for epoch in range(1, epochs_done + 1):
        rundir.append_metrics(files, MetricsRow(epoch=epoch, train_loss=0.5, val_dice=0.5, world_size=world_size))
    if stopped is not None:
        rundir.write_final(files, FinalSummary(run_dir=str(files.path), stopped=stopped,
                                               epochs_completed=epochs_done, epochs_planned=job.config.epochs))
    return experiment, job


def _dry_run(tiny_store, tmp_path):
    return CliRunner().invoke(main, [
        "launch", str(SMOKE), "--profile", str(LOCAL), "--set", f"store={tiny_store}",
        "--set", f"runs_root={tmp_path}", "--set", "architectures=['unet3plus']", "--set", "seeds=[0]",
        "--dry-run"])


def _assert_refused_before_queueing(experiment, tiny_store, tmp_path, index, dry_run_says: list[str],
                                    error: type[Exception], launch_says: str) -> None:
    """``--dry-run`` exits 2 saying ``dry_run_says``; ``launch`` raises ``error`` and queues nothing."""
    result = _dry_run(tiny_store, tmp_path)
    assert result.exit_code == 2, result.output
    for words in dry_run_says:
        assert words in result.output, result.output
    with pytest.raises(error, match=launch_says):
        submit_experiment(experiment, load_profile(LOCAL), index)
    assert not index.path.exists()  # nothing was queued or recorded


def test_dry_run_refuses_a_finished_run_whose_config_changed(tiny_store, tmp_path):
    _earlier_run(tiny_store, tmp_path, 2, "completed", grad_clip=0.123)
    result = _dry_run(tiny_store, tmp_path)
    assert result.exit_code == 2, result.output
    assert "unet3plus-s0:" in result.output and "the run config differs" in result.output
    assert "grad_clip: 0.123" in result.output and "finished" not in result.output


def test_launch_refuses_before_queueing_a_job_whose_config_changed(tiny_store, tmp_path, index):
    experiment, _ = _earlier_run(tiny_store, tmp_path, 1, None, grad_clip=0.123)
    with pytest.raises(ConfigError, match="unet3plus-s0: .*the run config differs.*grad_clip: 0.123"):
        submit_experiment(experiment, load_profile(LOCAL), index)
    assert not index.path.exists()  # nothing was queued or recorded


@pytest.mark.parametrize("stopped", ["patience", "time-budget"])
def test_dry_run_shows_a_patience_or_budget_stopped_run_ends_at_once(tiny_store, tmp_path, stopped):
    # The smoke experiment asks for 2 epochs; the run stopped after 1 and the stop still holds.
    _earlier_run(tiny_store, tmp_path, 1, stopped)
    result = _dry_run(tiny_store, tmp_path)
    assert result.exit_code == 0, result.output
    assert "finished: ends at once" in result.output and "extends" not in result.output


def test_dry_run_shows_an_extension_and_a_resume(tiny_store, tmp_path):
    _earlier_run(tiny_store, tmp_path, 1, "completed", epochs=1)
    assert "extends 1 → 2 epochs" in _dry_run(tiny_store, tmp_path).output
    next(tmp_path.glob("**/final.json")).unlink()  # the same run, cut off before it finished
    assert "resumes after epoch 1" in _dry_run(tiny_store, tmp_path).output


def test_dry_run_and_launch_refuse_trained_epochs_without_a_checkpoint_before_queueing(tiny_store, tmp_path, index):
    # Two trained epochs, no checkpoint: the job would refuse to start a second history and die.
    experiment, _ = _earlier_run(tiny_store, tmp_path, 2, None)
    _assert_refused_before_queueing(experiment, tiny_store, tmp_path, index, ["unet3plus-s0:", "nothing to resume from"],
                                    TrainingError, "unet3plus-s0: .*2 trained epoch.*its checkpoints are gone")


def test_dry_run_and_launch_refuse_a_run_trained_on_another_number_of_ranks(tiny_store, tmp_path, index):
    # Two ranks trained epoch 1 (a 2-node job); the local profile's job has one: another global batch.
    experiment, _ = _earlier_run(tiny_store, tmp_path, 1, None, world_size=2)
    _assert_refused_before_queueing(experiment, tiny_store, tmp_path, index,
                                    ["trained on 2 rank(s) (global batch 8 x 2 = 16); this job has 1",
                                     "nodes x tasks_per_node = 2"],
                                    TrainingError, "trained on 2 rank")


def test_dry_run_and_launch_refuse_a_run_trained_on_another_stores_content(tiny_store, tmp_path, index):
    experiment, job = _earlier_run(tiny_store, tmp_path, 1, None)
    other = {"path": "/elsewhere/store.zarr", "dataset": "other", "num_classes": 5, "spec_hash": "0123abcd"}
    rundir.write_run_info(RunFiles(job.run.run_dir), RunInfo(arch="unet3plus", store=other))
    _assert_refused_before_queueing(experiment, tiny_store, tmp_path, index, ["is not the store", "0123abcd"],
                                    DataError, "unet3plus-s0: .*is not the store .* was trained on")


# Every job started with this on its PYTHONPATH fails at its first training step, as a bug would.
FAILING_HOOK = """
from steelseg_hpc.training import engine

def failing(self, logits, masks):
    raise RuntimeError("a bug in the loss")

engine.TrainStep.fp32_loss = failing
"""


@pytest.mark.slow
def test_launch_wait_exits_non_zero_when_a_job_failed(tiny_store, tmp_path, index, monkeypatch):
    hook = tmp_path / "failing-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FAILING_HOOK)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    result = CliRunner().invoke(main, [
        "launch", str(SMOKE), "--profile", str(LOCAL), "--set", f"store={tiny_store}",
        "--set", f"runs_root={tmp_path}", "--set", "architectures=['unet3plus']", "--set", "seeds=[0]",
        "--wait"], env={"STEELSEG_INDEX": str(index.path)})
    assert result.exit_code == 1, result.output
    assert "1 of 1 job(s) did not complete" in result.output and "FAILED" in result.output
    assert "a bug in the loss" in result.output  # the table shows why
