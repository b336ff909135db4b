"""UNet 3+ (Huang et al., ICASSP 2020) and its Enhanced / Enhanced* (GLU) variants.

Every decoder stage gathers all five scales: finer encoder maps are pooled, the same-scale
encoder map is taken as is, coarser decoder maps (and the bottleneck) are bilinearly upsampled;
each goes through a 3x3 conv to ``base_channels`` (64), the five are concatenated (320) and fused
by a conv 320 -> 320. At the paper's width (64) with 1 input channel and 3 classes the model has
26.97 M parameters, the count the paper reports.

Example:
    >>> import torch
    >>> from steelseg_hpc.models import build_model
    >>> model = build_model("unet3plus", in_channels=1, num_classes=3, base_channels=4)
    >>> model(torch.zeros(1, 1, 96, 80)).shape
    torch.Size([1, 3, 96, 80])
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from steelseg_hpc.models.base import PaddedSegmenter
from steelseg_hpc.models.blocks import AggregationStage, ConvNormAct, Encoder, encoder_widths
from steelseg_hpc.models.options import BlockOptions, check_dilation_rates, check_flag, check_skip_order
from steelseg_hpc.models.presets import ENHANCED, ENHANCED_GLU
from steelseg_hpc.models.registry import register


class UNet3Plus(PaddedSegmenter):
    """UNet 3+ built from :mod:`steelseg_hpc.models.blocks`.

    Args:
        in_channels: image channels (1 for SEM).
        num_classes: output classes.
        base_channels: first encoder width; encoder = base x (1, 2, 4, 8, 16), each skip branch
            has ``base_channels`` and each decoder stage 5 x ``base_channels``.
        options: kernel size, norm, activation, pooling of every block.
        dilation_rates: the two dilation rates of each encoder DoubleConv.
        skip_kernel_size: kernel of the per-branch skip convs (the paper's 3x3).
        skip_order: "resample-then-conv" (paper) or "conv-then-resample" (cheaper, see blocks).
        deep_supervision: add a side output per decoder stage and the bottleneck.
        classification_guided: add the classification-guided module (see ``_gate``).
        activation_checkpointing: recompute each decoder stage in backward instead of keeping
            its activations (see :class:`~steelseg_hpc.models.blocks.AggregationStage`).
    """

    def __init__(self, in_channels: int, num_classes: int, base_channels: int,
                 options: BlockOptions, dilation_rates: Sequence[int], skip_kernel_size: int,
                 skip_order: str, deep_supervision: bool, classification_guided: bool,
                 activation_checkpointing: bool = False) -> None:
        super().__init__()
        widths = encoder_widths(base_channels)
        branch, fused = base_channels, 5 * base_channels
        self.deep_supervision = deep_supervision
        self.encoder = Encoder(in_channels, widths, options, dilation_rates)
        self.decoder = nn.ModuleList()
        for level in (3, 2, 1, 0):
            sources = []
            for src in range(5):
                if src <= level:  # encoder maps: finer ones pooled, the same scale as is
                    sources.append((widths[src], 2 ** (level - src), False))
                else:  # coarser decoder maps; level 4 is the bottleneck itself
                    sources.append((widths[4] if src == 4 else fused, 1, True))
            fuse = ConvNormAct(fused, fused, options)
            self.decoder.append(AggregationStage(sources, branch, fuse, options, skip_kernel_size,
                                                 skip_order, activation_checkpointing))
        self.head = nn.Conv2d(fused, num_classes, 3, padding=1)
        # Side outputs for decoder stages 1..3 (320 channels) and the bottleneck (1024).
        self.side_heads = nn.ModuleList(
            nn.Conv2d(c, num_classes, 3, padding=1) for c in (fused, fused, fused, widths[4])
        ) if deep_supervision else None
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(widths[4], num_classes, 1), nn.AdaptiveMaxPool2d(1)
        ) if classification_guided else None

    def forward_padded(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.encoder(x)
        maps = {4: features[4]}  # level -> the map a coarser-scale branch reads
        for level, stage in zip((3, 2, 1, 0), self.decoder):
            inputs = features[: level + 1] + [maps[src] for src in range(level + 1, 5)]
            maps[level] = stage(inputs, features[level].shape[-2:])
        outputs = [self.head(maps[0])]
        if self.side_heads is not None:
            outputs += [head(maps[level]) for head, level in zip(self.side_heads, (1, 2, 3, 4))]
        if self.classifier is not None:
            outputs = self._gate(outputs, self.classifier(features[4]))
        return outputs

    @staticmethod
    def _gate(outputs: list[torch.Tensor], presence_logits: torch.Tensor) -> list[torch.Tensor]:
        """Classification-guided module, generalised to several classes.

        The paper multiplies a binary output by the argmax of an organ/no-organ classifier on the
        bottleneck. For C classes we predict per-class presence p = sigmoid(l) and add log p to
        every output's class logits (softmax numerators scaled by p): a class judged absent from
        the image is suppressed everywhere, and the gate stays differentiable, so the segmentation
        loss trains the classifier too.
        """
        log_presence = F.logsigmoid(presence_logits.float()).to(outputs[0].dtype)
        return [out + log_presence for out in outputs]


def build_unet3plus(in_channels: int = 1, num_classes: int = 3, *, base_channels: int = 64,
                    kernel_size: int = 3, dilation_rates: Sequence[int] = (1, 1),
                    pooling: str = "max", activation: str = "relu", norm: str = "batch",
                    glu_mode: str = "pointwise", skip_kernel_size: int = 3,
                    skip_order: str = "resample-then-conv", deep_supervision: bool = False,
                    classification_guided: bool = False,
                    activation_checkpointing: bool = False) -> UNet3Plus:
    """Build a UNet 3+; every keyword is an ablation knob (see :class:`UNet3Plus`).

    Example:
        >>> sum(p.numel() for p in build_unet3plus(base_channels=4).parameters()) > 0
        True
    """
    options = BlockOptions(kernel_size=kernel_size, norm=norm, activation=activation,
                           glu_mode=glu_mode, pooling=pooling)
    return UNet3Plus(in_channels, num_classes, base_channels, options,
                     check_dilation_rates(dilation_rates), skip_kernel_size,
                     check_skip_order(skip_order), deep_supervision, classification_guided,
                     check_flag("activation_checkpointing", activation_checkpointing))


@register("unet3plus", family="unet3plus", options_of=build_unet3plus)
def unet3plus(**options) -> UNet3Plus:
    """Paper-faithful UNet 3+ (3x3 kernels, max pooling, ReLU, BatchNorm)."""
    return build_unet3plus(**options)


@register("unet3plus-enhanced", family="unet3plus", variant="enhanced", options_of=build_unet3plus)
def unet3plus_enhanced(**options) -> UNet3Plus:
    """UNet 3+ with 7x7 kernels, dilated encoder convs and anti-aliased (blur) pooling."""
    return build_unet3plus(**{**ENHANCED, **options})


@register("unet3plus-enhanced-glu", family="unet3plus", variant="enhanced-glu",
          options_of=build_unet3plus)
def unet3plus_enhanced_glu(**options) -> UNet3Plus:
    """Enhanced UNet 3+ with GLU activations (the lab's "Enhanced*")."""
    return build_unet3plus(**{**ENHANCED_GLU, **options})
