"""SDPA attention with SAM's relative-position bias matches the package's attention."""
from __future__ import annotations

import copy

import pytest
import torch
from segment_anything.modeling.image_encoder import Attention

from steelseg_hpc.models.sam_attention import SdpaAttention, use_sdpa_attention
from steelseg_hpc.models.sam_build import build_tiny_sam
from steelseg_hpc.models.sam_lora import SamLoRA

# bfloat16 keeps 8 significant bits: torch.testing's own bf16 tolerance is rtol 1.6e-2.
BF16_TOLERANCE = {"rtol": 1.6e-2, "atol": 2e-2}


def _assert_within_bf16_error(actual: torch.Tensor, expected_bf16: torch.Tensor, exact: torch.Tensor) -> None:
    """SDPA in bf16 deviates from eager bf16 no more than eager bf16 deviates from float32."""
    inherent = (expected_bf16 - exact).abs()
    deviation = (actual - expected_bf16).abs()
    assert deviation.max() <= 2 * inherent.max(), (deviation.max(), inherent.max())
    assert deviation.mean() <= 2 * inherent.mean(), (deviation.mean(), inherent.mean())


def _attention(grid: tuple[int, int]) -> Attention:
    torch.manual_seed(0)
    attention = Attention(64, num_heads=4, use_rel_pos=True, input_size=grid)
    with torch.no_grad():  # SAM zero-initialises the tables; make the bias matter
        attention.rel_pos_h.normal_(std=0.5)
        attention.rel_pos_w.normal_(std=0.5)
    return attention


@pytest.mark.parametrize("grid", [(4, 4), (6, 10)])
def test_sdpa_matches_package_attention_in_float32(grid):
    reference = _attention(grid)
    fused = SdpaAttention(copy.deepcopy(reference))
    x = torch.randn(2, *grid, 64, requires_grad=True)
    x_fused = x.detach().clone().requires_grad_(True)
    expected, actual = reference(x), fused(x_fused)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    expected.square().sum().backward()
    actual.square().sum().backward()
    torch.testing.assert_close(x_fused.grad, x.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fused.rel_pos_h.grad, reference.rel_pos_h.grad, rtol=1e-4, atol=1e-4)


def test_sdpa_matches_package_attention_in_bfloat16():
    reference = _attention((8, 8)).to(torch.bfloat16)
    fused = SdpaAttention(copy.deepcopy(reference))
    x = torch.randn(2, 8, 8, 64).to(torch.bfloat16)
    with torch.no_grad():
        expected, actual = reference(x), fused(x)
        exact = _attention((8, 8))(x.float())
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual.float(), expected.float(), **BF16_TOLERANCE)
    _assert_within_bf16_error(actual.float(), expected.float(), exact)


def test_whole_encoder_matches_under_bf16_autocast():
    torch.manual_seed(0)
    encoder = build_tiny_sam().image_encoder
    for block in encoder.blocks:
        torch.nn.init.normal_(block.attn.rel_pos_h, std=0.5)
        torch.nn.init.normal_(block.attn.rel_pos_w, std=0.5)
    fused = copy.deepcopy(encoder)
    assert use_sdpa_attention(fused) == 2 and use_sdpa_attention(fused) == 0
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        exact = encoder(images)
        torch.testing.assert_close(fused(images), exact, rtol=1e-5, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected, actual = encoder(images).float(), fused(images).float()
    _assert_within_bf16_error(actual, expected, exact)


def test_swap_keeps_parameter_names_and_lora_still_applies():
    sam = build_tiny_sam()
    names = list(sam.state_dict())
    use_sdpa_attention(sam.image_encoder)
    assert list(sam.state_dict()) == names
    lora = SamLoRA(sam, rank=2)
    assert all(isinstance(block.attn, SdpaAttention) for block in sam.image_encoder.blocks)
    assert type(sam.image_encoder.blocks[0].attn.qkv).__name__ == "LoRA_qkv" and len(lora.A_weights) == 4
