"""SamLoRA (the lab's Algorithm 1) on a tiny SAM: identity at init, what trains, which blocks."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.models.sam_build import build_tiny_sam
from steelseg_hpc.models.sam_lora import LoRA_qkv, SamLoRA, lora_modules


@pytest.fixture()
def tiny_sam():
    torch.manual_seed(0)
    return build_tiny_sam()


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 128, 128, generator=torch.Generator().manual_seed(1))


def _box_masks(sam, embeddings: torch.Tensor) -> torch.Tensor:
    """Decode one box prompt on the first image: exercises prompt encoder and decoder too."""
    sparse, dense = sam.prompt_encoder(points=None, boxes=torch.tensor([[10.0, 20.0, 90.0, 100.0]]), masks=None)
    masks, _ = sam.mask_decoder(embeddings[:1], sam.prompt_encoder.get_dense_pe(), sparse, dense, False)
    return masks


def test_adapted_model_equals_sam_at_init(tiny_sam):
    reference = copy.deepcopy(tiny_sam)
    lora = SamLoRA(tiny_sam, rank=4)
    images = _images()
    with torch.no_grad():
        expected, adapted = reference.image_encoder(images), lora(images)
        torch.testing.assert_close(adapted, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(_box_masks(lora.sam, adapted), _box_masks(reference, expected), rtol=0, atol=1e-6)


def test_nonzero_b_changes_the_output(tiny_sam):
    reference = copy.deepcopy(tiny_sam)
    lora = SamLoRA(tiny_sam, rank=4)
    for linear_b in lora.B_weights:
        nn.init.normal_(linear_b.weight, std=0.1)
    with torch.no_grad():
        assert not torch.allclose(lora(_images()), reference.image_encoder(_images()), atol=1e-4)


def test_structure_follows_algorithm_1(tiny_sam):
    lora = SamLoRA(tiny_sam, rank=8)
    assert lora.sam is tiny_sam and lora.lora_vit is tiny_sam.image_encoder
    assert len(lora.A_weights) == len(lora.B_weights) == 2 * len(tiny_sam.image_encoder.blocks)
    for linear_a, linear_b in zip(lora.A_weights, lora.B_weights):
        assert linear_a.weight.shape == (8, 64) and linear_b.weight.shape == (64, 8)
        assert linear_a.bias is None and linear_b.bias is None
        assert linear_a.weight.abs().sum() > 0 and linear_b.weight.abs().sum() == 0
    assert all(isinstance(block.attn.qkv, LoRA_qkv) for block in tiny_sam.image_encoder.blocks)


def test_only_adapters_train_in_the_encoder(tiny_sam):
    lora = SamLoRA(tiny_sam, rank=4)
    adapter_params = {id(m.weight) for m in lora.A_weights + lora.B_weights}
    for name, param in lora.lora_vit.named_parameters():
        assert param.requires_grad == (id(param) in adapter_params), name
    # Algorithm 1 freezes only the encoder: decoder and prompt encoder are the wrapper's business.
    trainable = sum(p.numel() for p in lora.lora_vit.parameters() if p.requires_grad)
    assert trainable == 2 * 2 * (64 * 4 + 4 * 64)


def test_rank_zero_is_plain_fine_tuning(tiny_sam):
    before = sum(p.numel() for p in tiny_sam.parameters())
    lora = SamLoRA(tiny_sam, rank=0)
    assert lora.A_weights == [] and lora.B_weights == [] and lora_modules(lora) == []
    assert sum(p.numel() for p in tiny_sam.parameters()) == before
    assert all(p.requires_grad for p in lora.lora_vit.parameters())


def test_lora_layer_subset_adapts_only_those_blocks(tiny_sam):
    lora = SamLoRA(tiny_sam, rank=4, lora_layer=[1])
    blocks = tiny_sam.image_encoder.blocks
    assert isinstance(blocks[0].attn.qkv, nn.Linear) and not isinstance(blocks[0].attn.qkv, LoRA_qkv)
    assert isinstance(blocks[1].attn.qkv, LoRA_qkv)
    assert len(lora.A_weights) == 2 and lora.lora_layer == [1]
    assert not any(p.requires_grad for p in blocks[0].parameters())


def test_key_projection_never_changes(tiny_sam):
    original_qkv = copy.deepcopy(tiny_sam.image_encoder.blocks[0].attn.qkv)
    lora = SamLoRA(tiny_sam, rank=4)
    for linear_b in lora.B_weights:
        nn.init.normal_(linear_b.weight, std=0.5)
    adapted = tiny_sam.image_encoder.blocks[0].attn.qkv
    tokens = torch.randn(3, 5, 64)
    with torch.no_grad():
        new, old = adapted(tokens), original_qkv(tokens)
    dim = 64
    torch.testing.assert_close(new[..., dim : 2 * dim], old[..., dim : 2 * dim], rtol=0, atol=0)
    assert not torch.allclose(new[..., :dim], old[..., :dim])  # q adapted
    assert not torch.allclose(new[..., 2 * dim :], old[..., 2 * dim :])  # v adapted


def test_training_moves_only_the_adapters(tiny_sam):
    frozen_before = {n: p.detach().clone() for n, p in tiny_sam.image_encoder.named_parameters()}
    lora = SamLoRA(tiny_sam, rank=4)
    optimizer = torch.optim.SGD([p for p in lora.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        lora(_images(1)).square().mean().backward()
        optimizer.step()
    for name, param in lora.lora_vit.named_parameters():
        if "linear_" not in name:
            key = name.replace("qkv.qkv.", "qkv.")
            torch.testing.assert_close(param, frozen_before[key], rtol=0, atol=0)
    assert any(b.weight.abs().sum() > 0 for b in lora.B_weights)


@pytest.mark.parametrize("rank", [-1, 1.5, True])
def test_bad_rank_is_a_config_error(tiny_sam, rank):
    with pytest.raises(ConfigError, match="rank"):
        SamLoRA(tiny_sam, rank=rank)


def test_out_of_range_block_is_a_config_error(tiny_sam):
    with pytest.raises(ConfigError, match="outside 0..1"):
        SamLoRA(tiny_sam, rank=4, lora_layer=[0, 2])


def test_state_dict_holds_the_encoder_once(tiny_sam):
    lora = SamLoRA(tiny_sam, rank=4)
    names = list(lora.state_dict())
    assert len(names) == len(set(names))
    assert not any(name.startswith("lora_vit.") for name in names)
    assert set(dict(lora.named_parameters())) <= set(names)
    assert [n for n in names if n.endswith("blocks.0.attn.qkv.qkv.weight")] == [
        "sam.image_encoder.blocks.0.attn.qkv.qkv.weight"]
