"""Small named building blocks shared by the U-Net3+ and ELU-Net families.

The Enhanced variants are the vanilla networks with these blocks configured differently (kernel
size, dilation, pooling, activation), never copies of them. :class:`BlockOptions` carries those
choices, so an ablation is a config change.

Example:
    >>> import torch
    >>> opts = BlockOptions(kernel_size=7, activation="glu")
    >>> block = DoubleConv(1, 8, opts, dilation_rates=(1, 2))
    >>> block(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 8, 32, 32])
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn as nn
from kornia.filters import MaxBlurPool2D
from torch.utils.checkpoint import checkpoint

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.models.activation_checkpointing import running_stats_kept
from steelseg_hpc.models.options import BlockOptions
from steelseg_hpc.models.resize import upsample_to


def make_norm(kind: str, channels: int) -> nn.Module:
    """A normalisation layer for ``channels`` feature maps (``nn.Identity`` for "none")."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        # The largest group count <= 8 that divides the channels keeps tiny test widths valid.
        groups = max(g for g in range(1, 9) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


def make_activation(kind: str) -> nn.Module:
    """An elementwise activation; "glu" is handled by :class:`ConvNormAct` since it halves channels."""
    return {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "silu": nn.SiLU}[kind]()


class ConvNormAct(nn.Sequential):
    """Conv (same padding, optional dilation) -> norm -> activation, with GLU as an activation.

    With ``activation="glu"`` the block emits ``out_channels`` = a * sigmoid(b), where the 2C
    pre-activation [a, b] comes from a 1x1 conv after the k x k conv ("pointwise") or from the
    k x k conv itself ("full"); ``glu_mode`` records which (None without a GLU). GLUs use
    ``torch.nn.GLU(dim=1)``: nn.GLU's default dim=-1 would split the image width, not the channels.

    Example:
        >>> ConvNormAct(4, 6, BlockOptions(activation="glu"))(torch.zeros(1, 4, 8, 8)).shape
        torch.Size([1, 6, 8, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, options: BlockOptions,
                 kernel_size: int | None = None, dilation: int = 1) -> None:
        k = options.kernel_size if kernel_size is None else kernel_size
        conv = _conv_factory(k, dilation, bias=options.norm == "none")  # norms make biases redundant
        mode = options.glu_mode if options.activation == "glu" else None
        conv_out = 2 * out_channels if mode == "full" else out_channels
        layers = [conv(in_channels, conv_out), make_norm(options.norm, conv_out)]
        if mode == "pointwise":
            layers.append(nn.Conv2d(out_channels, 2 * out_channels, 1))
        layers.append(nn.GLU(dim=1) if mode else make_activation(options.activation))
        super().__init__(*layers)
        self.glu_mode = mode


def _conv_factory(kernel_size: int, dilation: int, bias: bool):
    """A ``conv(in, out)`` maker with "same" padding for this kernel size and dilation."""
    padding = dilation * (kernel_size - 1) // 2

    def conv(in_channels: int, out_channels: int) -> nn.Conv2d:
        return nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding,
                         dilation=dilation, bias=bias)

    return conv


class DoubleConv(nn.Sequential):
    """Two :class:`ConvNormAct` (the U-Net "unetConv2"); ``dilation_rates`` gives one rate per conv."""

    def __init__(self, in_channels: int, out_channels: int, options: BlockOptions,
                 dilation_rates: Sequence[int] = (1, 1)) -> None:
        first, second = dilation_rates
        super().__init__(
            ConvNormAct(in_channels, out_channels, options, dilation=first),
            ConvNormAct(out_channels, out_channels, options, dilation=second),
        )


class Downsample(nn.Module):
    """Downsample by ``factor`` (a power of two) with max, average or blur pooling.

    "blur" is Zhang (2019)'s anti-aliased max pooling, kornia's ``MaxBlurPool2D`` (max with
    stride 1, then a 3x3 binomial blur with stride 2), applied log2(factor) times so every halving
    is low-pass filtered.
    """

    def __init__(self, factor: int, pooling: str) -> None:
        super().__init__()
        if factor < 1 or factor & (factor - 1):
            raise ValueError(f"factor must be a power of two, got {factor}")
        self.factor = factor
        if factor == 1:
            self.pool: nn.Module = nn.Identity()
        elif pooling == "max":
            self.pool = nn.MaxPool2d(factor, factor)
        elif pooling == "avg":
            self.pool = nn.AvgPool2d(factor, factor)
        else:
            self.pool = nn.Sequential(*[MaxBlurPool2D(3) for _ in range(factor.bit_length() - 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


class SkipProjection(nn.Module):
    """Bring one feature map to a decoder stage's scale and width (the full-scale skip unit).

    ``resample-then-conv`` (paper) resizes first and convolves at the target scale.
    ``conv-then-resample`` convolves at the source scale when the source is coarser (the conv then
    runs on 4^k fewer pixels and upsamples ``out_channels`` maps instead of wide encoder maps);
    finer sources are still pooled first, which is already the cheap order for them.
    """

    def __init__(self, in_channels: int, out_channels: int, options: BlockOptions, kernel_size: int,
                 skip_order: str, down_factor: int = 1, coarser: bool = False) -> None:
        super().__init__()
        self.down = Downsample(down_factor, options.pooling) if down_factor > 1 else None
        self.conv_first = coarser and skip_order == "conv-then-resample"
        self.conv = ConvNormAct(in_channels, out_channels, options, kernel_size=kernel_size)

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        if self.down is not None:
            return self.conv(self.down(x))
        if self.conv_first:
            return upsample_to(self.conv(x), size)
        return self.conv(upsample_to(x, size))


class AggregationStage(nn.Module):
    """One decoder stage: project every source to the stage's scale and width, concat, fuse.

    ``sources`` lists ``(in_channels, down_factor, coarser)`` per input, in forward order; each
    becomes a :class:`SkipProjection` to ``branch_channels``; ``fuse`` maps the concatenation.

    With ``checkpointed`` (activation checkpointing) a training forward keeps only the stage's
    inputs and recomputes its upsampled, projected and concatenated maps during backward: the
    full-resolution ones are most of a UNet 3+'s activation memory. Outputs and gradients are
    those of the plain stage.
    """

    def __init__(self, sources: Sequence[tuple[int, int, bool]], branch_channels: int,
                 fuse: nn.Module, options: BlockOptions, skip_kernel_size: int,
                 skip_order: str, checkpointed: bool = False) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            SkipProjection(c, branch_channels, options, skip_kernel_size, skip_order, down, coarser)
            for c, down, coarser in sources
        )
        self.fuse = fuse
        self.checkpointed = checkpointed

    def forward(self, inputs: Sequence[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        if not (self.checkpointed and self.training and torch.is_grad_enabled()):
            return self._aggregate(tuple(size), *inputs)
        if torch.compiler.is_compiling():
            # The compiled graph recomputes from its functional forward, which updates the
            # running statistics once; the eager-only guard below is neither needed nor traceable.
            return checkpoint(self._aggregate, tuple(size), *inputs, use_reentrant=False)
        return checkpoint(self._aggregate, tuple(size), *inputs, use_reentrant=False,
                          context_fn=lambda: (contextlib.nullcontext(), running_stats_kept(self)))

    def _aggregate(self, size: tuple[int, int], *inputs: torch.Tensor) -> torch.Tensor:
        parts = [branch(x, size) for branch, x in zip(self.branches, inputs, strict=True)]
        return self.fuse(torch.cat(parts, dim=1))


def encoder_widths(base_channels: int) -> list[int]:
    """The five encoder widths, base x (1, 2, 4, 8, 16): 64..1024 at the papers' width."""
    if base_channels < 1:
        raise ConfigError(f"base_channels must be >= 1, got {base_channels}")
    return [base_channels * 2**level for level in range(5)]


class Encoder(nn.ModuleList):
    """The shared five-level encoder: DoubleConv, then (downsample, DoubleConv) four times."""

    def __init__(self, in_channels: int, widths: Sequence[int], options: BlockOptions,
                 dilation_rates: Sequence[int]) -> None:
        stages: list[nn.Module] = [DoubleConv(in_channels, widths[0], options, dilation_rates)]
        for prev, width in zip(widths[:-1], widths[1:]):
            stages.append(nn.Sequential(Downsample(2, options.pooling),
                                        DoubleConv(prev, width, options, dilation_rates)))
        super().__init__(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        features = []
        for stage in self:
            x = stage(x)
            features.append(x)
        return features
