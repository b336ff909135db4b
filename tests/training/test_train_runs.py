"""One-process DeepSpeed runs on the tiny store: run dir, metrics, resume, preemption, fallback, NaN stop."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from steelseg_hpc.cli import main
from steelseg_hpc.core import rundir
from steelseg_hpc.training.precision import resolve_precision
from tests.training.helpers import CLI, TINY_UNET, read_metrics, run_cli, subprocess_env

#: What precision "auto" resolves to on this machine's CPU (bf16 only where it is native).
AUTO_ON_THIS_CPU = resolve_precision("auto", "cpu").resolved

METRIC_FIELDS = {
    "epoch", "step", "train_loss", "train_pixel_accuracy", "train_dice", "train_miou",
    "val_pixel_accuracy", "val_dice", "val_miou", "lr", "tiles_per_s", "epoch_seconds",
    "peak_memory_mb", "noise_scale_b_simple",
}
COMPARED = ("train_loss", "val_loss", "val_dice", "val_pixel_accuracy", "lr")


@pytest.mark.slow
def test_one_process_zero2_run_writes_everything(unet_run):
    rows = read_metrics(unet_run)
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert METRIC_FIELDS <= set(rows[0])
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["step"] == 9  # 12 tiles / (2 x 2) per step, 3 epochs
    assert all(row["noise_scale_b_simple"] is not None and row["peak_memory_mb"] > 0 for row in rows)
    for name in ("config.toml", "run.json", "train.log", "final.json"):
        assert (unet_run / name).is_file(), name
    run_info = json.loads((unet_run / "run.json").read_text())
    assert {"git", "versions", "starts", "schema_version"} <= set(run_info)
    assert run_info["versions"]["deepspeed"]
    start = run_info["starts"][-1]
    assert (start["precision"], start["precision_requested"]) == (AUTO_ON_THIS_CPU, "auto")
    final = json.loads((unet_run / "final.json").read_text())
    assert final["stopped"] == "completed" and final["epochs_completed"] == 3
    checkpoints = unet_run / "checkpoints"
    latest = (checkpoints / "latest").read_text().strip()
    assert latest == "epoch0003" and (checkpoints / latest / "weights.safetensors").is_file()
    assert (checkpoints / (checkpoints / "best").read_text().strip()).is_dir()
    assert len(list(checkpoints.glob("epoch*"))) <= 3  # keep 2 + best


@pytest.mark.slow
def test_evaluate_writes_metrics_and_overlays(unet_run):
    result = CliRunner().invoke(main, ["evaluate", str(unet_run), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert len(report["per_image"]) == 3
    overall = report["overall"]
    assert 0 <= overall["pixel_accuracy"] <= 1 and 0 <= overall["dice_macro"] <= 1
    assert len(overall["confusion"]) == 3
    out = Path(report["output_dir"])
    assert (out / "metrics.json").is_file() and len(list((out / "overlays").glob("*.png"))) == 3


@pytest.mark.slow
def test_rerunning_a_finished_run_returns_its_summary(unet_run, tiny_store):
    # In-process is fine: a finished run returns before any process group is created.
    result = CliRunner().invoke(main, ["train", "--store", str(tiny_store), "--run-dir", str(unet_run), *TINY_UNET])
    assert result.exit_code == 0, result.output
    assert json.loads((unet_run / "final.json").read_text())["epochs_completed"] == 3
    assert len(read_metrics(unet_run)) == 3


@pytest.mark.slow
def test_changed_config_on_resume_and_unknown_key_are_one_line_errors(unet_run, tiny_store):
    runner = CliRunner()
    changed = runner.invoke(main, ["train", "--store", str(tiny_store), "--run-dir", str(unet_run),
                                   *TINY_UNET, "--set", "model.base_channels=8"])
    assert changed.exit_code == 2 and "model.base_channels" in changed.output
    unknown = runner.invoke(main, ["train", "--store", str(tiny_store), *TINY_UNET, "--set", "optimiser.lr=1"])
    assert unknown.exit_code == 2 and "optimiser" in unknown.output
    bad_option = runner.invoke(main, ["train", "--store", str(tiny_store), *TINY_UNET, "--set", "model.widht=3"])
    assert bad_option.exit_code == 2 and "widht" in bad_option.output


@pytest.mark.slow
def test_console_shows_progress_lines_and_no_library_noise(unet_run):
    # progress goes to stderr (like every progress bar), the result to stdout
    console = (unet_run.parent / "stderr.txt").read_text()
    stdout = (unet_run.parent / "stdout.txt").read_text()
    lines = [line for line in console.splitlines() if line.strip()]
    assert lines[0].startswith("training unet3plus on ") and f"ZeRO-2, {AUTO_ON_THIS_CPU} (" in lines[0]
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1/3", "2/3", "3/3"]
    assert all("tiles/s" in line and "val Dice" in line for line in lines if line.startswith("epoch "))
    assert stdout.startswith("done ") and stdout.count("\n") == 1
    for noise in ("DeepSpeed", "WARNING", "CUDA_HOME", "learning rate from scheduler", "\x1b[", "Warning"):
        assert noise not in console + stdout, noise
    assert "DeepSpeed" in (unet_run / "train.log").read_text()  # the library's messages are kept there


@pytest.mark.slow
def test_raising_epochs_extends_a_finished_run(unet_run, tiny_store, tmp_path):
    run_dir = tmp_path / "extended"
    shutil.copytree(unet_run, run_dir)
    lowered = run_cli(["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_UNET, "--epochs", "2"],
                      check=False)
    assert lowered.returncode == 2 and "epochs: 3 -> 2" in lowered.stderr
    run_cli(["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_UNET, "--epochs", "4"])
    log = (run_dir / "train.log").read_text()
    assert "extending the run (epochs 3 -> 4)" in log and "ends at step 12 instead of 9" in log
    rows = read_metrics(run_dir)
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4] and rows[-1]["step"] == 12
    assert rows[:3] == read_metrics(unet_run)
    final = json.loads((run_dir / "final.json").read_text())
    assert final["epochs_completed"] == 4 and final["epochs_planned"] == 4
    assert "epochs = 4" in (run_dir / "config.toml").read_text()


def _assert_same_final_metrics(run_a: Path, run_b: Path) -> None:
    last_a, last_b = read_metrics(run_a)[-1], read_metrics(run_b)[-1]
    assert last_a["epoch"] == last_b["epoch"] and last_a["step"] == last_b["step"]
    for key in COMPARED:
        assert last_b[key] == pytest.approx(last_a[key], rel=1e-3, abs=1e-5), key


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_equals_uninterrupted(unet_run, tiny_store, tmp_path):
    run_dir = tmp_path / "killed"
    args = CLI + ["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_UNET]
    process = subprocess.Popen(args, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    latest = run_dir / "checkpoints" / "latest"
    # The epoch-1 checkpoint is in place (after its metrics line): kill during epoch 2.
    while not latest.exists():
        assert process.poll() is None and time.time() < deadline, "run ended or hung before epoch 1"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (run_dir / "final.json").exists()
    run_cli(["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_UNET])
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2, 3]
    assert "resumed from checkpoint" in (run_dir / "train.log").read_text()
    _assert_same_final_metrics(unet_run, run_dir)


# Runs the real CLI, with one change: the Nth training forward writes a marker file and waits (up
# to 60 s) until the process has received its stop signal. The test sends SIGUSR2 from outside
# once it sees the marker, so the signal lands at a known micro-batch instead of at a time that
# depends on the machine's load.
PAUSE_SCRIPT = """
import signal, sys, time
from pathlib import Path
from steelseg_hpc.training import engine

calls = {"n": 0}
original = engine.TrainStep.fp32_loss

def pausing(self, logits, masks):
    calls["n"] += self.training
    if self.training and calls["n"] == int(sys.argv[1]):
        Path(sys.argv[2]).write_text("waiting for SIGUSR2")
        stop = signal.getsignal(signal.SIGUSR2).__self__  # the CLI's StopRequest
        deadline = time.time() + 60
        while not stop.requested and time.time() < deadline:
            time.sleep(0.01)
    return original(self, logits, masks)

engine.TrainStep.fp32_loss = pausing
from steelseg_hpc.cli import main
main(sys.argv[3:])
"""


def _train_until_usr2_at_forward(forward: int, marker: Path, store, run_dir: Path, settings: list[str],
                                 stderr_path: Path) -> None:
    """``train`` with ``settings``, sent SIGUSR2 while its ``forward``-th training forward waits;
    asserts it exited on the signal (its stderr goes to ``stderr_path``)."""
    args = [sys.executable, "-c", PAUSE_SCRIPT, str(forward), str(marker),
            "train", "--store", str(store), "--run-dir", str(run_dir), *settings]
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(args, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.time() + 240
        while not marker.exists():
            assert process.poll() is None and time.time() < deadline, "run ended or hung before the forward"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGUSR2)
        assert process.wait(timeout=240) == 128 + signal.SIGUSR2


@pytest.mark.slow
def test_usr2_mid_epoch_saves_at_the_step_and_resumes_to_the_same_result(unet_run, tiny_store, tmp_path):
    run_dir = tmp_path / "preempted"
    marker = tmp_path / "in-epoch-2"
    # 6 micro-batches (3 steps of 2) per epoch: forward 8 is the 2nd micro-batch of epoch 2, so
    # the stop comes at the step boundary after it, 2 micro-batches into epoch 2.
    _train_until_usr2_at_forward(8, marker, tiny_store, run_dir, TINY_UNET, tmp_path / "stderr.txt")
    message = (tmp_path / "stderr.txt").read_text()
    assert "stopped: stopped on SIGUSR2 in epoch 2 after 2 micro-batches" in message, message[-3000:]
    checkpoints = run_dir / "checkpoints"
    assert (checkpoints / "latest").read_text().strip() == "epoch0002-mb000002"
    meta = json.loads((checkpoints / "epoch0002-mb000002" / "meta.json").read_text())
    assert meta["micro_batches"] == 2 and meta["score"] is None
    assert (checkpoints / "best").read_text().strip() == "epoch0001"  # never a half epoch
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1]
    assert not (run_dir / "final.json").exists()

    run_cli(["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_UNET])
    log = (run_dir / "train.log").read_text()
    assert "resumed from checkpoint epoch0002-mb000002 (epoch 2, after micro-batch 2 of it)" in log
    resumed, reference = read_metrics(run_dir), read_metrics(unet_run)
    assert [row["epoch"] for row in resumed] == [1, 2, 3]
    # Every epoch, the interrupted one included, matches the uninterrupted run's line.
    for row, expected in zip(resumed, reference):
        assert row["step"] == expected["step"]
        for key in (*COMPARED, "train_dice", "train_pixel_accuracy", "noise_scale_b_simple"):
            assert row[key] == pytest.approx(expected[key], rel=1e-3, abs=1e-5), (row["epoch"], key)


@pytest.mark.slow
def test_corrupted_latest_checkpoint_falls_back_to_previous(unet_run, tiny_store, tmp_path):
    run_dir = tmp_path / "corrupted"
    shutil.copytree(unet_run, run_dir)
    (run_dir / "final.json").unlink()  # as if the run died after writing epoch 3
    for state in (run_dir / "checkpoints" / "epoch0003").glob("*optim_states.pt"):
        state.write_bytes(state.read_bytes()[:100])
    run_cli(["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_UNET])
    log = (run_dir / "train.log").read_text()
    assert "damaged" in log and "resumed from checkpoint epoch0002" in log
    _assert_same_final_metrics(unet_run, run_dir)


NAN_SCRIPT = """
import sys
from pathlib import Path
from steelseg_hpc.core.errors import TrainingError
from steelseg_hpc.training import engine, load_run_config, train

calls = {"n": 0}
original = engine.TrainStep.fp32_loss

def poisoned(self, logits, masks):
    loss = original(self, logits, masks)
    calls["n"] += self.training
    return loss * float("nan") if self.training and calls["n"] > int(sys.argv[3]) else loss

engine.TrainStep.fp32_loss = poisoned
config = load_run_config(None, sys.argv[4:], store=sys.argv[1])
try:
    train(config, Path(sys.argv[2]))
except TrainingError as exc:
    print("STOPPED:", exc)
"""


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_best_checkpoint(tiny_store, tmp_path):
    run_dir = tmp_path / "nan"
    overrides = ["model.name=unet3plus", "model.base_channels=4", "data.num_workers=0", "data.max_train_tiles=8",
                 "micro_batch=2", "grad_accumulation=2", "epochs=3", "progress=false"]
    # 4 micro-batches per epoch: the loss turns NaN in epoch 2 (validation forwards are not counted).
    script = [sys.executable, "-c", NAN_SCRIPT, str(tiny_store), str(run_dir), "5", *overrides]
    result = subprocess.run(script, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert "STOPPED: non-finite training loss in epoch 2" in result.stdout, result.stderr[-3000:]
    checkpoints = run_dir / "checkpoints"
    assert (checkpoints / "best").read_text().strip() == "epoch0001"
    assert (checkpoints / "latest").read_text().strip() == "epoch0001"
    assert not (checkpoints / "epoch0002").exists() and not (run_dir / "final.json").exists()
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1]
    assert "non-finite training loss" in (run_dir / "train.log").read_text()


def _every_point(run_dir: Path) -> list[dict]:
    return [row.to_dict() for row in rundir.read_metrics(run_dir, every_point=True)]


@pytest.mark.slow
def test_validation_at_tile_counts_lands_between_epochs_and_survives_a_mid_epoch_stop(tiny_store, tmp_path):
    # 12 tiles per epoch in 3 steps of 4: points every 8 tiles fall at steps 2 and 4; the one at
    # 24 tiles is epoch 2's end, validated once, by the epoch's row.
    settings = [*TINY_UNET, "--epochs", "2", "--set", "val_every_tiles=8"]
    reference = tmp_path / "uninterrupted"
    run_cli(["train", "--store", str(tiny_store), "--run-dir", str(reference), *settings])
    rows = _every_point(reference)
    assert [(row["point"], row["step"], row["tiles_trained"]) for row in rows] == [
        ("tiles", 2, 8), ("epoch", 3, 12), ("tiles", 4, 16), ("epoch", 6, 24)]
    assert all(row["val_dice"] is not None for row in rows)
    assert [row["epoch"] for row in _every_point(reference) if row["point"] == "epoch"] == [1, 2]
    assert [row.epoch for row in rundir.read_metrics(reference)] == [1, 2]  # what status, pruner and report read

    # Stopped at the step after forward 8 (step 4, epoch 2): the point at step 4 is kept, not
    # written twice, and the resumed run validates where the uninterrupted one did.
    run_dir, marker = tmp_path / "preempted", tmp_path / "in-epoch-2"
    _train_until_usr2_at_forward(8, marker, tiny_store, run_dir, settings, tmp_path / "stderr.txt")
    run_cli(["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *settings])
    resumed = _every_point(run_dir)
    assert [(row["point"], row["step"]) for row in resumed] == [(row["point"], row["step"]) for row in rows]
    for got, expected in zip(resumed, rows):
        assert got["val_dice"] == pytest.approx(expected["val_dice"], rel=1e-3, abs=1e-5), got["step"]
