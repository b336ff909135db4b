"""Trainable-weights files (safetensors) and merging LoRA into qkv."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file

from steelseg_hpc.core.errors import DataError
from steelseg_hpc.models import build_model
from steelseg_hpc.models.sam_build import build_sam, build_tiny_sam
from steelseg_hpc.models.sam_lora import lora_modules


def _model(checkpoint, **options):
    defaults = {"num_classes": 3, "rank": 4, "variant": "tiny", "checkpoint": str(checkpoint), "image_size": 64}
    return build_model("sam-lora", **{**defaults, **options}).eval()


def _pretend_trained(model: nn.Module) -> None:
    """Random B and decoder nudges, as if after training (B = 0 would hide merge bugs)."""
    torch.manual_seed(7)
    with torch.no_grad():
        for linear_b in model.lora.B_weights:
            linear_b.weight.normal_(std=0.05)
        for param in model.sam.mask_decoder.parameters():
            if param.requires_grad:
                param.add_(0.01 * torch.randn_like(param))


def test_save_load_merge_round_trip(sam_checkpoint, tmp_path):
    trained = _model(sam_checkpoint)
    _pretend_trained(trained)
    tiles = torch.rand(2, 1, 48, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = trained(tiles)
    weights = tmp_path / "run" / "sam_lora.safetensors"
    trained.save_trainable(weights)

    saved = load_file(str(weights))
    assert set(saved) == {n for n, p in trained.named_parameters() if p.requires_grad}
    assert all("image_encoder.patch_embed" not in key for key in saved)  # frozen weights stay out

    restored = _model(sam_checkpoint)
    metadata = restored.load_trainable(weights)
    assert json.loads(metadata["sam_lora_options"])["rank"] == 4
    with torch.no_grad():
        torch.testing.assert_close(restored(tiles), expected, rtol=0, atol=0)
        assert restored.merge_lora() == 2
        assert lora_modules(restored) == [] and restored.lora.A_weights == []
        torch.testing.assert_close(restored(tiles), expected, rtol=1e-4, atol=1e-4)
    plain_sam_parameters = sum(p.numel() for p in build_sam("tiny", image_size=64).image_encoder.parameters())
    assert sum(p.numel() for p in restored.sam.image_encoder.parameters()) == plain_sam_parameters


def test_loading_into_a_differently_built_model_names_the_file(sam_checkpoint, tmp_path):
    weights = tmp_path / "rank4.safetensors"
    _model(sam_checkpoint).save_trainable(weights)
    for options in ({"rank": 8}, {"lora_layer": [1]}, {"num_classes": 5}):
        with pytest.raises(DataError, match=f"{weights} does not match"):
            _model(sam_checkpoint, **options).load_trainable(weights)


def test_unreadable_weights_file_names_it(sam_checkpoint, tmp_path):
    weights = tmp_path / "broken.safetensors"
    weights.write_bytes(b"\x00" * 20)
    with pytest.raises(DataError, match=f"{weights} is unreadable"):
        _model(sam_checkpoint).load_trainable(weights)
    with pytest.raises(DataError, match="unreadable"):
        _model(sam_checkpoint).load_trainable(tmp_path / "missing.safetensors")
