"""Bilinear resizes of feature maps that stay within CUDA's 32-bit indexing."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

#: The most elements one bilinear resize may write. CUDA's upsample kernels index with 32-bit
#: integers and fail beyond INT_MAX: UNet 3+ at 800 px and batch 16 upsamples the bottleneck to
#: [16, 1024, 400, 400] (2.6e9 elements) in the paper's skip order.
MAX_RESIZE_ELEMENTS = 2**31 - 1


def _bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def upsample_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize to ``size`` (H, W); a no-op when the size already matches.

    An output larger than :data:`MAX_RESIZE_ELEMENTS` is resized in slices of the batch (and, if
    one sample is still too large, of its channels). Every output pixel depends only on its own
    (sample, channel) plane, so the slices give exactly the unsliced values and gradients.

    Example:
        >>> upsample_to(torch.zeros(2, 3, 4, 5), (8, 10)).shape
        torch.Size([2, 3, 8, 10])
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    batch, channels = x.shape[:2]
    plane = size[0] * size[1]
    limit = MAX_RESIZE_ELEMENTS
    if batch * channels * plane <= limit:
        return _bilinear(x, size)
    if channels * plane <= limit:
        samples = max(1, limit // (channels * plane))
        return torch.cat([_bilinear(part, size) for part in x.split(samples, dim=0)], dim=0)
    planes = max(1, limit // plane)
    return torch.cat([torch.cat([_bilinear(part, size) for part in sample.split(planes, dim=1)], dim=1)
                      for sample in x.split(1, dim=0)], dim=0)
