"""Two-process (torchrun, gloo) runs, SAM_LoRA runs, and a run on the MetalDAM store."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from steelseg_hpc.cli import main

from tests.training.helpers import BF16, TINY_SAM, TINY_UNET, read_metrics, run_cli, run_torchrun

pytestmark = pytest.mark.slow


def test_two_process_unet_zero2_bf16(tiny_store, tmp_path):
    run_dir = tmp_path / "unet-2p"
    run_torchrun(["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_UNET, *BF16,
                  "--epochs", "2", "--set", "data.max_train_tiles=16"])
    rows = read_metrics(run_dir)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert all(row["world_size"] == 2 and row["global_batch"] == 8 for row in rows)
    assert rows[0]["step"] == 2  # 16 tiles / 2 ranks / (2 x 2)
    assert rows[-1]["noise_scale_b_simple"] is not None
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    # Each rank wrote its ZeRO-2 optimiser partition into the same checkpoint.
    assert len(list((run_dir / "checkpoints" / "epoch0002").glob("*optim_states.pt"))) == 2
    assert json.loads((run_dir / "final.json").read_text())["epochs_completed"] == 2


def test_one_process_sam_lora(tiny_store, tmp_path):
    # Prompt-free here; the two-process test below covers box prompts (loss_and_logits).
    run_dir = tmp_path / "sam-none"
    run_cli(["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_SAM,
             "--set", 'model.prompt="none"'])
    rows = read_metrics(run_dir)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert all(row["train_loss"] == row["train_loss"] for row in rows)  # finite
    weights = run_dir / "checkpoints" / "epoch0002" / "weights.safetensors"
    assert weights.is_file()


def test_two_process_sam_lora_box_prompts(tiny_store, tmp_path):
    run_dir = tmp_path / "sam-2p"
    run_torchrun(["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_SAM,
                  "--epochs", "1", "--set", 'model.prompt="box"'])
    rows = read_metrics(run_dir)
    assert rows[0]["world_size"] == 2 and rows[0]["step"] == 1


def test_training_on_the_metaldam_store_runs(tiny_store_5, tmp_path):
    run_dir = tmp_path / "metaldam"
    run_cli(["train", "--store", str(tiny_store_5), "--run-dir", str(run_dir), *TINY_UNET,
             "--epochs", "1", "--set", "data.max_train_tiles=4", "--set", "eval.batch_size=4"])
    rows = read_metrics(run_dir)
    assert rows[0]["epoch"] == 1 and rows[0]["step"] == 1
    config = (run_dir / "config.toml").read_text()
    assert "metaldam" in config
    result = CliRunner().invoke(main, ["evaluate", str(run_dir), "--json"])  # no DeepSpeed: in-process
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert len(report["class_names"]) == 5 and len(report["overall"]["confusion"]) == 5
