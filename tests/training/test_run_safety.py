"""A run never loses, mixes or fakes its history: validated before it writes, one writer, its own
store, no second history after damage, metrics rows that survive a kill, no silent fallbacks."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from steelseg_hpc.cli import main
from tests.training.helpers import CLI, TINY_SAM, TINY_UNET, read_metrics, run_cli, subprocess_env
from tests.mounts import tmpfs

pytestmark = pytest.mark.slow


def one_line_error(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr + result.stdout, result.stderr
    return lines[0]


@pytest.mark.parametrize("base, bad, expected", [
    (TINY_UNET, ["--set", "data.train_split=nosuch"], "data.train_split = 'nosuch': the store"),
    (TINY_UNET, ["--set", "data.max_train_tiles=1"], "too few for one optimiser step"),
    (TINY_SAM, ["--set", "model.checkpoint=\"BASE\""], "SAM checkpoint"),
], ids=["split", "tiles", "sam-checkpoint"])
def test_a_failed_start_writes_nothing_so_the_corrected_command_runs(tiny_store, tmp_path, base, bad, expected):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    bad = [item.replace("BASE", str(garbage)) for item in bad]
    run_dir = tmp_path / "run"
    error = one_line_error(run_cli(["train", "--store", str(tiny_store), "--run-dir", str(run_dir),
                                    *base, "--epochs", "1", *bad], check=False))
    assert expected in error
    assert not run_dir.exists() or not any(run_dir.iterdir()), list(run_dir.iterdir())
    run_cli(["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *base, "--epochs", "1"])
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1]


def test_all_checkpoints_damaged_is_refused_and_restart_starts_a_clean_history(unet_run, tiny_store, tmp_path):
    run_dir = tmp_path / "damaged"
    shutil.copytree(unet_run, run_dir)
    (run_dir / "final.json").unlink()
    for weights in (run_dir / "checkpoints").glob("epoch*/weights.safetensors"):
        weights.write_bytes(weights.read_bytes()[:50])
    args = ["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_UNET]
    error = one_line_error(run_cli(args, check=False))
    assert "has 3 trained epoch(s)" in error and "are damaged" in error and "--restart" in error
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2, 3]  # untouched
    run_cli([*args, "--restart"])
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2, 3]  # one history, not 1,2,3,1,2,3
    (aside,) = tmp_path.glob("damaged.damaged-*")
    assert [row["epoch"] for row in read_metrics(aside)] == [1, 2, 3]


# Dies like kill -9 right after a checkpoint becomes `latest` (before anything else runs).
KILL_AFTER_SAVE = """
import os, sys
from steelseg_hpc.training import checkpoints
original = checkpoints.CheckpointManager.save

def save_then_die(self, epoch, *args, **kwargs):
    tag = original(self, epoch, *args, **kwargs)
    if epoch == int(sys.argv[1]) and kwargs.get("micro_batches") is None:
        os._exit(9)
    return tag

checkpoints.CheckpointManager.save = save_then_die
from steelseg_hpc.cli import main
main(sys.argv[2:])
"""


def test_kill_just_after_a_checkpoint_keeps_that_epochs_metrics_row(unet_run, tiny_store, tmp_path):
    run_dir = tmp_path / "killed"
    args = ["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_UNET]
    done = subprocess.run([sys.executable, "-c", KILL_AFTER_SAVE, "2", *args], env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 9, done.stderr[-2000:]
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "epoch0002"
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2]
    run_cli(args)
    rows = read_metrics(run_dir)
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    final = json.loads((run_dir / "final.json").read_text())
    assert final["best_epoch"] in [row["epoch"] for row in rows]



# The second epoch's step runs out of GPU memory, as a batch too large for the card does.
OOM_IN_EPOCH_2 = """
import sys
import torch
from steelseg_hpc.training import trainer
original, calls = trainer.train_one_epoch, []

def out_of_memory_on_the_second_epoch(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.1 GiB total)")
    return original(*args, **kwargs)

trainer.train_one_epoch = out_of_memory_on_the_second_epoch
from steelseg_hpc.cli import main
main(sys.argv[1:])
"""


def test_out_of_memory_is_one_line_with_what_to_change_and_the_run_resumes(tiny_store, tmp_path):
    run_dir = tmp_path / "oom"
    args = ["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_UNET]
    done = subprocess.run([sys.executable, "-c", OOM_IN_EPOCH_2, *args], env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    error = one_line_error(done)
    assert "out of memory at micro_batch" in error and "CUDA out of memory" in error
    assert "grad_accumulation=" in error and "the same command resumes" in error
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1]
    run_cli(args)
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2, 3]

def test_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(tiny_store, tmp_path):
    run_dir = tmp_path / "locked"
    args = CLI + ["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_UNET, "--epochs", "50"]
    first = subprocess.Popen(args, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run_dir / "metrics.jsonl").exists():
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.1)
        second = run_cli(["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_UNET,
                          "--epochs", "50"], check=False)
        error = one_line_error(second)
        assert f"is in use by pid {first.pid} on {socket.gethostname()}" in error
    finally:
        first.send_signal(signal.SIGTERM)
        code = first.wait(timeout=120)
    assert code == 128 + signal.SIGTERM
    assert not (run_dir / ".lock").exists()  # released when it stopped
    # A lock left by a process that is gone (kill -9) does not block the next run.
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 7, "since": "then"}))
    run_cli(["train", "--store", str(tiny_store), "--run-dir", str(stale), *TINY_UNET, "--epochs", "1"])
    assert not (stale / ".lock").exists() and [row["epoch"] for row in read_metrics(stale)] == [1]


def test_a_run_knows_its_store(unet_run, tiny_store, tiny_store_5, tmp_path):
    run_dir = tmp_path / "mine"
    shutil.copytree(unet_run, run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["store"]["path"] == str(tiny_store.absolute()) and info["store"]["spec_hash"]
    error = one_line_error(run_cli(["train", "--store", str(tiny_store_5), "--run-dir", str(run_dir),
                                    *TINY_UNET, "--epochs", "4"], check=False))
    assert "is not the store" in error and "3 classes" in error and "5 classes" in error
    # the same store by another path is the same store
    link = tmp_path / "alias.zarr"
    link.symlink_to(tiny_store)
    (run_dir / "final.json").unlink()
    run_cli(["train", "--store", str(link), "--run-dir", str(run_dir), *TINY_UNET])
    refused = CliRunner().invoke(main, ["evaluate", str(run_dir), "--store", str(tiny_store_5)])
    assert refused.exit_code == 2 and "is not the store" in refused.output


def test_evaluate_uses_the_recorded_store_from_any_folder(tiny_store, tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    shutil.copytree(tiny_store, work / "data" / "store.zarr")
    run = subprocess.run(CLI + ["train", "--store", "data/store.zarr", "--run-dir", "runs/a", *TINY_UNET,
                                "--epochs", "1"], env=subprocess_env(), cwd=work, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)
    (elsewhere / "data" / "store.zarr").mkdir()  # a different (empty) thing at the same relative path
    monkeypatch.chdir(elsewhere)
    result = CliRunner().invoke(main, ["evaluate", str(work / "runs" / "a"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["store"] == str((work / "data" / "store.zarr").absolute())
    assert (work / "runs" / "a" / "eval" / "test" / "metrics.json").is_file()


def test_evaluate_of_a_run_whose_store_moved_points_at_store_not_at_prep(unet_run, tiny_store, tmp_path):
    run_dir = tmp_path / "moved-store"
    shutil.copytree(unet_run, run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    gone = tmp_path / "old-place" / "store.zarr"  # where the store was when the run trained
    info["store"]["path"] = str(gone)
    (run_dir / "run.json").write_text(json.dumps(info))
    refused = CliRunner().invoke(main, ["evaluate", str(run_dir)])
    assert refused.exit_code == 2
    assert f"{gone}, is gone (moved or deleted); pass --store NEW_PATH" in refused.output
    assert "prep" not in refused.output and len(refused.output.strip().splitlines()) == 1
    moved = CliRunner().invoke(main, ["evaluate", str(run_dir), "--store", str(tiny_store), "--json"])
    assert moved.exit_code == 0, moved.output


def test_evaluate_never_substitutes_a_damaged_best_checkpoint(unet_run, tmp_path):
    run_dir = tmp_path / "damaged-best"
    shutil.copytree(unet_run, run_dir)
    best = (run_dir / "checkpoints" / "best").read_text().strip()
    weights = run_dir / "checkpoints" / best / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    refused = CliRunner().invoke(main, ["evaluate", str(run_dir)])
    assert refused.exit_code == 2 and f"checkpoint {best} is damaged" in refused.output
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    if latest != best:
        assert f"evaluate --checkpoint latest uses {latest}" in refused.output
        used = CliRunner().invoke(main, ["evaluate", str(run_dir), "--checkpoint", "latest", "--json"])
        assert used.exit_code == 0, used.output
        report = json.loads(used.output)
        assert (report["checkpoint"], report["checkpoint_choice"]) == (latest, "latest")
    missing = CliRunner().invoke(main, ["evaluate", str(run_dir), "--split", "train"])
    assert missing.exit_code == 2 and "keeps no whole images of it" in missing.output
    nosuch = CliRunner().invoke(main, ["evaluate", str(run_dir), "--split", "tset"])
    assert nosuch.exit_code == 2 and "has no such split" in nosuch.output


def test_run_dir_that_is_a_file_and_val_on_train_are_reported(tiny_store, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    error = one_line_error(run_cli(["train", "--store", str(tiny_store), "--run-dir", str(afile), *TINY_UNET],
                                   check=False))
    assert "is a file; expected a folder" in error
    result = run_cli(["train", "--store", str(tiny_store), "--run-dir", str(tmp_path / "fit"), *TINY_UNET,
                      "--epochs", "1", "--set", "data.val_split=train"])
    assert "validation runs on training tiles" in result.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs (root only, as in CI); it is unmounted afterwards."""
    with tmpfs(tmp_path / "small", "size=6m") as mount:
        yield mount


def test_a_full_disk_and_a_read_only_disk_are_one_line(tiny_store, small_disk, tmp_path):
    run_dir = small_disk / "run"
    error = one_line_error(run_cli(["train", "--store", str(tiny_store), "--run-dir", str(run_dir),
                                    *TINY_UNET, "--set", "model.base_channels=16"], check=False))
    assert "no space left on device" in error and str(small_disk) in error
    assert not list((run_dir / "checkpoints").glob("*.partial"))  # nothing half-written stays
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    error = one_line_error(run_cli(["train", "--store", str(tiny_store), "--run-dir", str(small_disk / "other"),
                                    *TINY_UNET], check=False))
    assert "read-only file system" in error
