"""Focal + Jaccard + MS-SSIM loss: properties, small tiles, bf16, the pytorch-msssim reference."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.models import build_model
from steelseg_hpc.models.losses import SegmentationLoss, msssim_geometry, multiscale_ssim


def _confident(target, num_classes, scale=20.0):
    return scale * F.one_hot(target, num_classes).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("size", [(64, 64), (16, 16), (17, 23), (96, 80)])
def test_perfect_prediction_is_near_zero_and_wrong_is_not(size):
    torch.manual_seed(0)
    loss = SegmentationLoss(num_classes=3)
    target = torch.randint(0, 3, (2, *size))
    assert float(loss(_confident(target, 3), target)) < 1e-3
    assert float(loss(_confident((target + 1) % 3, 3), target)) > 1.0


def test_class_symmetric():
    torch.manual_seed(0)
    loss = SegmentationLoss(num_classes=4)
    logits, target = torch.randn(2, 4, 32, 32), torch.randint(0, 4, (2, 32, 32))
    permutation = torch.tensor([2, 0, 3, 1])  # class c becomes permutation[c]
    relabelled = permutation[target]
    permuted_logits = torch.empty_like(logits)
    permuted_logits[:, permutation] = logits
    assert torch.allclose(loss(logits, target), loss(permuted_logits, relabelled), atol=1e-6)


@pytest.mark.parametrize("size", [3, 8, 16, 31, 64])
def test_small_tiles_never_crash_and_have_finite_gradients(size):
    loss = SegmentationLoss(num_classes=3)
    logits = torch.zeros(1, 3, size, size, requires_grad=True)  # uniform: contrast terms are 0
    value = loss(logits, torch.randint(0, 3, (1, size, size)))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


def test_msssim_geometry_fits_the_tile():
    for side in (3, 16, 64, 100, 192, 800):
        levels, window = msssim_geometry(side)
        assert levels >= 1 and window >= 3 and window % 2 == 1
        assert side // 2 ** (levels - 1) >= window
    assert msssim_geometry(2) == (0, 0)


def test_multiscale_ssim_matches_pytorch_msssim_where_it_applies():
    torch.manual_seed(0)
    x = F.avg_pool2d(torch.rand(2, 3, 200, 200), 9, stride=1)  # smooth, positively correlated
    y = (x + 0.05 * torch.rand_like(x)).clamp(0, 1)
    ours = multiscale_ssim(x, y, data_range=1.0)
    reference = ms_ssim(x, y, data_range=1.0, size_average=False)
    assert torch.allclose(ours.mean(dim=1), reference, atol=1e-5)


def test_bf16_autocast_is_computed_in_float32():
    torch.manual_seed(0)
    loss = SegmentationLoss(num_classes=3)
    logits, target = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = loss(logits.bfloat16(), target)
    assert low.dtype == torch.float32
    assert torch.allclose(low, loss(logits.bfloat16().float(), target))


def test_weights_and_deep_supervision_list():
    torch.manual_seed(0)
    logits, target = torch.randn(1, 3, 32, 32), torch.randint(0, 3, (1, 32, 32))
    parts = [SegmentationLoss(3, focal_weight=f, jaccard_weight=j, msssim_weight=m)(logits, target)
             for f, j, m in [(1, 0, 0), (0, 1, 0), (0, 0, 1)]]
    weighted = SegmentationLoss(3, focal_weight=2, jaccard_weight=0.5, msssim_weight=3)
    assert torch.allclose(weighted(logits, target), 2 * parts[0] + 0.5 * parts[1] + 3 * parts[2])
    full = SegmentationLoss(3)
    perfect = _confident(target, 3)
    assert torch.allclose(full([logits, perfect], target), full(logits, target) / 2, atol=1e-4)


def test_invalid_configuration():
    with pytest.raises(ConfigError):
        SegmentationLoss(3, focal_weight=-1)
    with pytest.raises(ConfigError):
        SegmentationLoss(3, focal_weight=0, jaccard_weight=0, msssim_weight=0)
    with pytest.raises(ConfigError):
        SegmentationLoss(1)


@pytest.mark.slow
def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = build_model("unet3plus", base_channels=4)
    loss_fn = SegmentationLoss(num_classes=3)
    images = torch.rand(2, 1, 32, 32)
    target = (images[:, 0] * 3).long().clamp(max=2)  # intensity bands: learnable
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = loss_fn(model(images), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
