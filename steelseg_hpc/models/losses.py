"""The lab's loss: focal + Jaccard (soft IoU) + MS-SSIM on the class-probability maps.

All three terms are computed in float32 with autocast disabled, so the loss is stable when the
model runs in bf16 (softmax, log and the SSIM variances lose too much in 8 mantissa bits). Each
term is a mean over classes, so the loss is symmetric under a relabelling of the classes, and each
is ~0 for a confident, correct prediction.

MS-SSIM adapts to the tile: pytorch-msssim asserts ``side > (win_size - 1) * 16`` whatever the
number of scales, so a 64-px tile only fits a 3-px window and a 16-px tile does not fit at all,
and its ``relu(cs) ** weight`` has an infinite gradient wherever a contrast term reaches 0 (common
early in training: NaN losses). :func:`multiscale_ssim` follows the same formulas (Wang et al.
2003, pytorch-msssim's constants and weights; the tests check it matches ``pytorch_msssim.ms_ssim``
where that applies) but picks the number of scales and the window for the tile and clamps
instead of relu.

Example:
    >>> import torch
    >>> loss = SegmentationLoss(num_classes=3)
    >>> target = torch.randint(0, 3, (2, 64, 64))
    >>> perfect = 20.0 * torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    >>> float(loss(perfect, target)) < 1e-3
    True
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from steelseg_hpc.core.errors import ConfigError

# Wang et al.'s five scale weights (as in pytorch-msssim); fewer scales use a renormalised prefix.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    window = torch.exp(-(coords**2) / (2 * sigma**2))
    return window / window.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable depthwise Gaussian filter, valid padding (as pytorch-msssim)."""
    channels, size = x.shape[1], window.numel()
    x = F.conv2d(x, window.view(1, 1, 1, size).expand(channels, 1, 1, size), groups=channels)
    return F.conv2d(x, window.view(1, 1, size, 1).expand(channels, 1, size, 1), groups=channels)


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor,
                data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean SSIM and contrast-structure term, each ``[B, C]``."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    var_x = _blur(x * x, window) - mu_x**2
    var_y = _blur(y * y, window) - mu_y**2
    cov = _blur(x * y, window) - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs_map
    return ssim_map.mean(dim=(-2, -1)), cs_map.mean(dim=(-2, -1))


def msssim_geometry(side: int, max_levels: int = 5, max_window: int = 11) -> tuple[int, int]:
    """The (levels, window) MS-SSIM uses for images whose smaller side is ``side``.

    The most scales (<= ``max_levels``) whose coarsest image still fits a window of at least 3,
    then the largest odd window (<= ``max_window``) that fits the coarsest scale. ``(0, 0)`` when
    the image is too small for any SSIM (side < 3).

    Example:
        >>> msssim_geometry(800), msssim_geometry(64), msssim_geometry(16)
        ((5, 11), (5, 3), (3, 3))
    """
    for levels in range(max_levels, 0, -1):
        coarsest = side // 2 ** (levels - 1)
        window = min(max_window, coarsest - 1 if coarsest % 2 == 0 else coarsest)
        if window >= 3:
            return levels, window
    return 0, 0


def multiscale_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """MS-SSIM per sample and channel, ``[B, C]``, for images of any size >= 3 px.

    Example:
        >>> img = torch.rand(1, 2, 16, 16)
        >>> torch.allclose(multiscale_ssim(img, img), torch.ones(1, 2))
        True
    """
    levels, window_size = msssim_geometry(min(x.shape[-2:]))
    if levels == 0:
        return torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
    window = _gaussian_window(window_size, 1.5 * window_size / 11, x)  # sigma scales with window
    weights = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=x.dtype, device=x.device)
    weights = weights / weights.sum()
    terms = []
    for level in range(levels):
        ssim, cs = _ssim_terms(x, y, window, data_range)
        if level < levels - 1:
            terms.append(cs)
            padding = [s % 2 for s in x.shape[-2:]]
            x, y = F.avg_pool2d(x, 2, padding=padding), F.avg_pool2d(y, 2, padding=padding)
    terms.append(ssim)
    # Clamping (not relu) keeps the fractional power's gradient finite when a term reaches 0.
    stacked = torch.stack(terms).clamp(min=1e-6)
    return torch.prod(stacked ** weights.view(-1, 1, 1), dim=0)


class SegmentationLoss(nn.Module):
    """Weighted focal + soft-Jaccard + (1 - MS-SSIM) loss on class logits.

    Args:
        num_classes: C; targets hold class indices 0..C-1.
        focal_weight, jaccard_weight, msssim_weight: term weights (0 switches a term off).
        focal_gamma: focusing exponent (0 gives cross-entropy).

    A list of logits (deep supervision, main first) gives the mean of the per-output losses.

    Example:
        >>> loss = SegmentationLoss(3, msssim_weight=0.0)
        >>> logits = torch.zeros(1, 3, 16, 16, requires_grad=True)
        >>> loss(logits, torch.zeros(1, 16, 16, dtype=torch.long)).backward()
    """

    def __init__(self, num_classes: int, focal_weight: float = 1.0, jaccard_weight: float = 1.0,
                 msssim_weight: float = 1.0, focal_gamma: float = 2.0) -> None:
        super().__init__()
        weights = (focal_weight, jaccard_weight, msssim_weight)
        if num_classes < 2 or min(weights) < 0 or sum(weights) == 0 or focal_gamma < 0:
            raise ConfigError(
                "loss: need num_classes >= 2, non-negative weights with a positive sum and "
                f"focal_gamma >= 0; got num_classes={num_classes}, weights={weights}, "
                f"focal_gamma={focal_gamma}"
            )
        self.num_classes = num_classes
        self.focal_weight, self.jaccard_weight, self.msssim_weight = weights
        self.focal_gamma = focal_gamma

    def forward(self, logits: torch.Tensor | list[torch.Tensor],
                target: torch.Tensor) -> torch.Tensor:
        outputs = logits if isinstance(logits, (list, tuple)) else [logits]
        with torch.autocast(device_type=target.device.type, enabled=False):
            losses = [self._single(out.float(), target) for out in outputs]
        return torch.stack(losses).mean()

    def _single(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_probs = F.log_softmax(logits, dim=1)
        probs = log_probs.exp()
        one_hot = F.one_hot(target, self.num_classes).permute(0, 3, 1, 2).to(probs.dtype)
        total = logits.new_zeros(())
        if self.focal_weight:
            nll = -(log_probs * one_hot).sum(dim=1)
            focal = (1 - torch.exp(-nll)) ** self.focal_gamma * nll
            total = total + self.focal_weight * focal.mean()
        if self.jaccard_weight:
            dims = (0, 2, 3)
            intersection = (probs * one_hot).sum(dims)
            union = (probs + one_hot).sum(dims) - intersection
            # A class absent from both prediction and target scores a perfect 1 (loss 0).
            jaccard = (intersection + 1.0) / (union + 1.0)
            total = total + self.jaccard_weight * (1 - jaccard).mean()
        if self.msssim_weight:
            total = total + self.msssim_weight * (1 - multiscale_ssim(probs, one_hot)).mean()
        return total
