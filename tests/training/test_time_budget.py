"""``time_budget_s``: train until the budget is used, stop at an optimiser step, finish the epoch."""
from __future__ import annotations

import json

import pytest

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.training.config import config_differences, extensions, load_run_config
from tests.training.helpers import TINY_UNET, read_metrics, run_cli

# TINY_UNET trains 12 tiles per epoch: 3 optimiser steps of 2 x 2 tiles.
STEPS_PER_EPOCH, GLOBAL_BATCH = 3, 4


def test_time_budget_is_checked_and_raising_it_extends_a_run():
    with pytest.raises(ConfigError, match="time_budget_s"):
        load_run_config(None, ["time_budget_s=-1"])
    saved = load_run_config(None, ["time_budget_s=150"])
    assert extensions(saved, load_run_config(None, ["time_budget_s=300"])) == {"time_budget_s": (150.0, 300.0)}
    assert extensions(saved, load_run_config(None, ["time_budget_s=0"])) == {"time_budget_s": (150.0, 0.0)}
    assert config_differences(saved, load_run_config(None, ["time_budget_s=100"])) == [
        "time_budget_s: 150.0 -> 100.0"]


@pytest.mark.slow
def test_a_spent_budget_stops_at_a_step_then_validates_checkpoints_and_says_why(tiny_store, tmp_path):
    run_dir = tmp_path / "run"
    # A 1 ms budget is spent by the first step, which an epoch always trains: the epoch ends
    # after exactly one optimiser step, whatever the machine's speed.
    command = ["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_UNET,
               "--set", "time_budget_s=0.001"]
    result = run_cli(command)
    assert "time-budget after 1 epochs" in result.stdout
    (row,) = read_metrics(run_dir)
    assert (row["epoch"], row["step"], row["tiles_trained"]) == (1, 1, GLOBAL_BATCH)
    assert row["train_seconds"] >= 0.001 and row["val_dice"] is not None
    final = json.loads((run_dir / "final.json").read_text())
    assert final["stopped"] == "time-budget"
    assert (final["epochs_completed"], final["epochs_planned"]) == (1, 3)
    assert final["best_checkpoint"] == "epoch0001"
    evaluation = json.loads(run_cli(["evaluate", str(run_dir), "--json"]).stdout)
    assert evaluation["checkpoint"] == "epoch0001"

    # The same command again: the budget is still spent, so nothing more is trained.
    run_cli(command)
    assert len(read_metrics(run_dir)) == 1

    # A larger budget extends the run from its checkpoint; the epochs then end it.
    run_cli(command[:-1] + ["time_budget_s=1000"])
    rows = read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [r["step"] for r in rows] == [1, 1 + STEPS_PER_EPOCH, 1 + 2 * STEPS_PER_EPOCH]
    assert json.loads((run_dir / "final.json").read_text())["stopped"] == "completed"
