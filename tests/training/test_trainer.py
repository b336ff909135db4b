"""The Trainer's hooks see every optimiser step and every finished epoch's metrics row."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.training.helpers import read_metrics, subprocess_env

pytestmark = pytest.mark.slow

# TINY_UNET's run (3 epochs of 3 optimiser steps), built and fitted through the Trainer itself.
FIT_WITH_HOOKS = """
import json, sys
from pathlib import Path
from steelseg_hpc.data import open_store, store_identity
from steelseg_hpc.training.config import load_run_config
from steelseg_hpc.training.distributed import setup_distributed
from steelseg_hpc.training.run_writer import RunWriter
from steelseg_hpc.training.trainer import Trainer

store_path, run_path, out = sys.argv[1:]
config = load_run_config(None, ["model.base_channels=4", "data.num_workers=0", "data.max_train_tiles=12",
                                "grad_accumulation=2", "schedule.warmup_epochs=0", "progress=false",
                                "micro_batch=2", "optimizer.lr=0.01"],
                         arch="unet3plus", store=store_path, epochs=3, zero_stage=2, precision="auto")
store = open_store(store_path)
trainer = Trainer.setup(config, RunWriter(Path(run_path)), setup_distributed(), store, base={},
                        identity=store_identity(store))
seen = {"steps": [], "rows": []}
trainer.on_step_end.append(lambda trainer, loss: seen["steps"].append([trainer.engine.global_steps, loss]))
trainer.on_epoch_end.append(lambda trainer, row: seen["rows"].append(
    [row.epoch, row.step, trainer.state.epoch, trainer.state.best_epoch]))
summary = trainer.fit()
seen["best_epoch"] = summary.best_epoch
Path(out).write_text(json.dumps(seen))
"""


def test_hooks_see_each_optimiser_step_and_each_epochs_row(tiny_store, tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "seen.json"
    done = subprocess.run([sys.executable, "-c", FIT_WITH_HOOKS, str(tiny_store), str(run_dir), str(out)],
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(out.read_text())
    assert [step for step, _ in seen["steps"]] == list(range(1, 10))
    rows = read_metrics(run_dir)
    assert [[row["epoch"], row["step"]] for row in rows] == [[epoch, step] for epoch, step, _, _ in seen["rows"]]
    assert [state_epoch for _, _, state_epoch, _ in seen["rows"]] == [1, 2, 3]
    assert seen["rows"][-1][3] == seen["best_epoch"]


def test_a_resume_keeps_the_tile_points_before_its_checkpoint_and_drops_the_later_ones(tmp_path):
    from steelseg_hpc.core.rundir import TILES_POINT, MetricsRow, read_metrics
    from steelseg_hpc.training.run_writer import RunWriter

    run = RunWriter(tmp_path / "run")
    run.path.mkdir()
    for row in (MetricsRow(epoch=1, step=2, point=TILES_POINT), MetricsRow(epoch=1, step=3),
                MetricsRow(epoch=2, step=4, point=TILES_POINT), MetricsRow(epoch=2, step=5, point=TILES_POINT),
                MetricsRow(epoch=2, step=6)):
        run.append_metrics(row)
    run.truncate_metrics(1, last_step=4)  # a mid-epoch checkpoint at step 4 of epoch 2
    assert [(row.point, row.step) for row in read_metrics(run.path, every_point=True)] == [
        ("tiles", 2), ("epoch", 3), ("tiles", 4)]
    run.truncate_metrics(1, last_step=3)  # epoch 1's own checkpoint
    assert [row.step for row in read_metrics(run.path, every_point=True)] == [2, 3]
    assert [row.step for row in read_metrics(run.path)] == [3]
