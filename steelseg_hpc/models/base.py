"""The contract of the dense models: any input size in, logits of that size out.

:class:`PaddedSegmenter` pads the input to a multiple of 16 (:func:`pad_to_multiple`), runs the
network, resizes its outputs to the padded input and crops them back to the original size.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from steelseg_hpc.models.resize import upsample_to


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad the bottom/right edges so H and W are multiples of ``multiple``.

    Example:
        >>> pad_to_multiple(torch.zeros(1, 1, 96, 80), 16).shape
        torch.Size([1, 1, 96, 80])
        >>> pad_to_multiple(torch.zeros(1, 1, 50, 17), 16).shape
        torch.Size([1, 1, 64, 32])
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    # Reflection needs the pad to be smaller than the side; tiny inputs fall back to replication.
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class PaddedSegmenter(nn.Module):
    """Base of the dense models: pad to a multiple of 16, run, crop back, apply the contract.

    Subclasses implement ``forward_padded(x) -> list[Tensor]``: class logits, main output first,
    then deep-supervision outputs at any scale. ``forward`` resizes every entry to the padded input,
    crops to the original H x W, and returns the main output alone unless deep supervision is on
    and the model is training.
    """

    size_multiple = 16  # four 2x downsamplings
    deep_supervision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, self.size_multiple)
        outputs = self.forward_padded(padded)
        if not (self.deep_supervision and self.training):
            outputs = outputs[:1]
        outputs = [upsample_to(o, padded.shape[-2:])[..., :height, :width] for o in outputs]
        return outputs if self.deep_supervision and self.training else outputs[0]

    def forward_padded(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError
