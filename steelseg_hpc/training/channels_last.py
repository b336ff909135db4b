"""``channels_last = true``: every activation of the model in NHWC, its parameters left contiguous."""
from __future__ import annotations

import torch
import torch.nn as nn


def channels_last_activations(model: nn.Module) -> nn.Module:
    """Make every convolution of ``model`` emit channels-last maps, leaving parameters as they are.

    A conv runs in channels-last (NHWC) when its input or its weight is in that format, and
    then emits it, so once the first map is channels-last the whole network is. Converting the
    weights (``model.to(memory_format=torch.channels_last)``) would be the usual seed, but
    DeepSpeed keeps parameters contiguous: it broadcasts them as bytes and flattens them into
    ZeRO buckets. Nor can a one-channel SEM input carry the format: with C = 1 both layouts are
    the same bytes and PyTorch reads the tensor as contiguous. So each conv's output is made
    channels-last instead; after the first conv that is a no-op. Returns ``model``.

    Example:
        >>> conv = channels_last_activations(nn.Conv2d(1, 4, 3))
        >>> conv(torch.zeros(1, 1, 8, 8)).is_contiguous(memory_format=torch.channels_last)
        True
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(_to_channels_last)
    return model


def _to_channels_last(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    return output.contiguous(memory_format=torch.channels_last)
