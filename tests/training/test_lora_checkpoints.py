"""SAM_LoRA runs checkpoint only what they train, resume and evaluate from that, refuse another base,
and export merged weights that predict what the LoRA model predicts."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from steelseg_hpc.cli import main
from steelseg_hpc.inference import load_exported
from steelseg_hpc.inference.evaluate import load_trained_model
from steelseg_hpc.models.sam_build import build_tiny_sam
from tests.training.helpers import TINY_SAM, read_metrics, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory):
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("base") / "sam_tiny.pth"
    torch.save(build_tiny_sam().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def lora_run(tiny_store, base_checkpoint, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("lora") / "sam-r4"
    run_cli(["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_SAM, "--epochs", "1",
             "--set", 'model.prompt="none"', "--set", f'model.checkpoint="{base_checkpoint}"'])
    return run_dir


def _trainable_names(run_dir):
    model, _, meta = load_trained_model(run_dir)
    return {name for name, p in model.named_parameters() if p.requires_grad}, model, meta


def test_checkpoint_holds_only_trainable_tensors_and_names_the_base(lora_run, base_checkpoint):
    folder = lora_run / "checkpoints" / "epoch0001"
    weights = load_file(folder / "weights.safetensors")
    trainable, model, meta = _trainable_names(lora_run)
    assert set(weights) == trainable and len(trainable) < len(dict(model.named_parameters()))
    assert any("linear_a_q" in name for name in weights)
    assert not any(name.endswith("attn.qkv.qkv.weight") for name in weights)  # frozen base
    assert meta.kind == "trainable" and meta.base["path"] == str(base_checkpoint.absolute())
    assert len(meta.base["sha256"]) == 64
    # DeepSpeed's own module state leaves the frozen base out too.
    states = torch.load(folder / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    assert not any(name.endswith("attn.qkv.qkv.weight") for name in states["module"])
    run_info = json.loads((lora_run / "run.json").read_text())
    assert run_info["model"]["base"] == meta.base


def test_resume_extend_evaluate_and_export_from_lora_only_checkpoints(lora_run, tiny_store, base_checkpoint,
                                                                      tmp_path):
    run_dir = tmp_path / "extended"
    shutil.copytree(lora_run, run_dir)
    run_cli(["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_SAM, "--epochs", "2",
             "--set", 'model.prompt="none"', "--set", f'model.checkpoint="{base_checkpoint}"'])
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2]
    log = (run_dir / "train.log").read_text()
    assert "resumed from checkpoint epoch0001" in log and "extending the run (epochs 1 -> 2)" in log
    result = CliRunner().invoke(main, ["evaluate", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["checkpoint"] in ("epoch0001", "epoch0002")

    out = tmp_path / "merged.safetensors"
    exported = CliRunner().invoke(main, ["export", str(run_dir), "--out", str(out)])
    assert exported.exit_code == 0 and "LoRA adapters merged" in exported.output, exported.output
    lora_model, _, _ = load_trained_model(run_dir)
    merged = load_exported(out)
    assert not any("linear_a" in name for name, _ in merged.named_parameters())
    images = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = lora_model(images), merged(images)
    assert torch.allclose(expected, got, atol=1e-4, rtol=1e-4), (expected - got).abs().max()


def test_a_changed_base_checkpoint_is_refused(lora_run, tiny_store, base_checkpoint, tmp_path):
    run_dir = tmp_path / "rebased"
    shutil.copytree(lora_run, run_dir)
    backup = tmp_path / "original.pth"
    shutil.copy(base_checkpoint, backup)
    torch.manual_seed(7)
    torch.save(build_tiny_sam().state_dict(), base_checkpoint)  # same path, other weights
    try:
        result = run_cli(["train", "--store", str(tiny_store), "--run-dir", str(run_dir), *TINY_SAM, "--epochs", "2",
                          "--set", 'model.prompt="none"', "--set", f'model.checkpoint="{base_checkpoint}"'],
                         check=False)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "was trained on the base" in lines[0] and "Traceback" not in result.stderr
        evaluation = CliRunner().invoke(main, ["evaluate", str(run_dir)])
        assert evaluation.exit_code == 2 and "was trained on the base" in evaluation.output
        assert [row["epoch"] for row in read_metrics(run_dir)] == [1]  # nothing trained on it
    finally:
        shutil.copy(backup, base_checkpoint)


def test_cnn_export_loads_to_the_same_predictions(unet_run, tmp_path):
    out = tmp_path / "unet.safetensors"
    result = CliRunner().invoke(main, ["export", str(unet_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    model, _, _ = load_trained_model(unet_run)
    images = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(images), load_exported(out)(images))


def test_export_never_replaces_an_existing_file_without_force(unet_run, tmp_path):
    out = tmp_path / "weights.safetensors"
    out.write_bytes(b"the user's own weights")
    refused = CliRunner().invoke(main, ["export", str(unet_run), "--out", str(out)])
    assert refused.exit_code == 2 and str(out) in refused.output and "--force" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and out.read_bytes() == b"the user's own weights"
    folder = CliRunner().invoke(main, ["export", str(unet_run), "--out", str(tmp_path)])
    assert folder.exit_code == 2 and str(tmp_path) in folder.output and "directory" in folder.output
    forced = CliRunner().invoke(main, ["export", str(unet_run), "--out", str(out), "--force"])
    assert forced.exit_code == 0, forced.output
    images = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    model, _, _ = load_trained_model(unet_run)
    with torch.no_grad():
        assert torch.equal(model(images), load_exported(out)(images))
