"""ELU-Net (Deng et al., IEEE Access 2022) and its Enhanced / Enhanced* (GLU) variants.

No official code or parameter table is public; this is our reading of the paper (details and
the alternatives we rejected are in docs/models.md). The encoder is U-Net's (widths base x 1..16).
Decoder stage ``i`` (at encoder level ``i``'s scale, width ``w_i``) receives "deep skip
connections":

- the previous decoder stage (the bottleneck for the deepest stage), upsampled;
- the same-scale encoder map ``e_i`` (U-Net's skip);
- every larger-scale (deeper, coarser) encoder map ``e_j``, ``i < j <= 3``, upsampled.

Each source goes through a 3x3 conv to ``w_i`` channels; the concatenation is fused by a
DoubleConv to ``w_i``; a 1x1 conv gives the class logits. Unlike UNet 3+ there are no
decoder-to-decoder full-scale links and no pooled finer-scale inputs, and stage widths follow
U-Net (512, 256, 128, 64) instead of a constant 320, which is what makes it lighter.

Example:
    >>> import torch
    >>> from steelseg_hpc.models import build_model
    >>> model = build_model("elunet", num_classes=5, base_channels=4)
    >>> model(torch.zeros(2, 1, 96, 80)).shape
    torch.Size([2, 5, 96, 80])
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from steelseg_hpc.models.base import PaddedSegmenter
from steelseg_hpc.models.blocks import AggregationStage, DoubleConv, Encoder, encoder_widths
from steelseg_hpc.models.options import BlockOptions, check_dilation_rates, check_flag, check_skip_order
from steelseg_hpc.models.presets import ENHANCED, ENHANCED_GLU
from steelseg_hpc.models.registry import register


class ELUNet(PaddedSegmenter):
    """ELU-Net built from :mod:`steelseg_hpc.models.blocks`.

    Args:
        in_channels: image channels.
        num_classes: output classes.
        base_channels: first encoder width (64 as in U-Net; every width scales with it).
        options: kernel size, norm, activation, pooling of every block.
        dilation_rates: the two dilation rates of each encoder DoubleConv.
        skip_kernel_size: kernel of the per-source skip convs (3x3).
        skip_order: "resample-then-conv" (paper order) or "conv-then-resample".
        deep_supervision: side outputs from decoder stages 1..3 (an extension; the paper trains
            the single output).
        activation_checkpointing: recompute each decoder stage in backward instead of keeping
            its activations (see :class:`~steelseg_hpc.models.blocks.AggregationStage`).
    """

    def __init__(self, in_channels: int, num_classes: int, base_channels: int,
                 options: BlockOptions, dilation_rates: Sequence[int], skip_kernel_size: int,
                 skip_order: str, deep_supervision: bool,
                 activation_checkpointing: bool = False) -> None:
        super().__init__()
        widths = encoder_widths(base_channels)
        self.deep_supervision = deep_supervision
        self.encoder = Encoder(in_channels, widths, options, dilation_rates)
        self.decoder = nn.ModuleList()
        for level in (3, 2, 1, 0):
            previous = (widths[level + 1], 1, True)
            same_scale = (widths[level], 1, False)
            deeper = [(widths[src], 1, True) for src in range(level + 1, 4)]
            fuse_in = (2 + len(deeper)) * widths[level]
            fuse = DoubleConv(fuse_in, widths[level], options)
            self.decoder.append(AggregationStage([previous, same_scale, *deeper], widths[level],
                                                 fuse, options, skip_kernel_size, skip_order,
                                                 activation_checkpointing))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.side_heads = nn.ModuleList(
            nn.Conv2d(widths[level], num_classes, 1) for level in (1, 2, 3)
        ) if deep_supervision else None

    def forward_padded(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.encoder(x)
        decoded = {4: features[4]}
        for level, stage in zip((3, 2, 1, 0), self.decoder):
            inputs = [decoded[level + 1], features[level], *features[level + 1:4]]
            decoded[level] = stage(inputs, features[level].shape[-2:])
        outputs = [self.head(decoded[0])]
        if self.side_heads is not None:
            outputs += [head(decoded[level]) for head, level in zip(self.side_heads, (1, 2, 3))]
        return outputs


def build_elunet(in_channels: int = 1, num_classes: int = 3, *, base_channels: int = 64,
                 kernel_size: int = 3, dilation_rates: Sequence[int] = (1, 1),
                 pooling: str = "max", activation: str = "relu", norm: str = "batch",
                 glu_mode: str = "pointwise", skip_kernel_size: int = 3,
                 skip_order: str = "resample-then-conv",
                 deep_supervision: bool = False, activation_checkpointing: bool = False) -> ELUNet:
    """Build an ELU-Net; every keyword is an ablation knob (see :class:`ELUNet`).

    Example:
        >>> build_elunet(base_channels=4, kernel_size=7).encoder[0][0][0].kernel_size
        (7, 7)
    """
    options = BlockOptions(kernel_size=kernel_size, norm=norm, activation=activation,
                           glu_mode=glu_mode, pooling=pooling)
    return ELUNet(in_channels, num_classes, base_channels, options,
                  check_dilation_rates(dilation_rates), skip_kernel_size,
                  check_skip_order(skip_order), deep_supervision, check_flag("activation_checkpointing", activation_checkpointing))


@register("elunet", family="elunet", options_of=build_elunet)
def elunet(**options) -> ELUNet:
    """ELU-Net as read from the paper (3x3 kernels, max pooling, ReLU, BatchNorm)."""
    return build_elunet(**options)


@register("elunet-enhanced", family="elunet", variant="enhanced", options_of=build_elunet)
def elunet_enhanced(**options) -> ELUNet:
    """ELU-Net with 7x7 kernels, dilated encoder convs and anti-aliased (blur) pooling."""
    return build_elunet(**{**ENHANCED, **options})


@register("elunet-enhanced-glu", family="elunet", variant="enhanced-glu", options_of=build_elunet)
def elunet_enhanced_glu(**options) -> ELUNet:
    """Enhanced ELU-Net with GLU activations (Enhanced*)."""
    return build_elunet(**{**ENHANCED_GLU, **options})
