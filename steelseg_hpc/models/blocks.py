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
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from kornia.filters import MaxBlurPool2D
from torch.utils.checkpoint import checkpoint

from steelseg_hpc.core.errors import ConfigError

NORMS = ("batch", "group", "instance", "none")
ACTIVATIONS = ("relu", "leaky_relu", "gelu", "silu", "glu")
POOLINGS = ("max", "avg", "blur")
# How a GLU activation gets its 2C pre-activation channels (docs/models.md, "The GLU blow-up"):
# "pointwise" (ours) gates the k x k conv's output through a 1x1 conv C -> 2C: ~1.05x the FLOPs;
# "full" (textbook) makes the k x k conv itself emit 2C channels: 2x FLOPs, ~1.6x memory.
# "split" and "dropin" reproduce naive blocks for the benchmark only: "split" runs separate value
# and gate k x k convs with their own norms and an unfused fp32 a * sigmoid(b); "dropin" keeps the
# conv and uses a drop-in gated activation that has its own k x k conv C -> 2C.
GLU_MODES = ("pointwise", "full", "split", "dropin")


@dataclass(frozen=True)
class BlockOptions:
    """The per-block choices an ablation changes.

    Args:
        kernel_size: odd kernel of the feature convolutions (3 vanilla, 7 Enhanced).
        norm: "batch", "group" (8 groups or fewer), "instance" or "none".
        activation: "relu", "leaky_relu", "gelu", "silu" or "glu" (torch.nn.GLU over channels).
        glu_mode: how a GLU gets its gate: "pointwise" (default), "full", or the naive
            "split" / "dropin" kept for the benchmark (see GLU_MODES above).
        pooling: downsampling, "max", "avg" or "blur" (Zhang 2019 anti-aliased max pooling).
    """

    kernel_size: int = 3
    norm: str = "batch"
    activation: str = "relu"
    glu_mode: str = "pointwise"
    pooling: str = "max"

    def __post_init__(self) -> None:
        _choose("norm", self.norm, NORMS)
        _choose("activation", self.activation, ACTIVATIONS)
        _choose("glu_mode", self.glu_mode, GLU_MODES)
        _choose("pooling", self.pooling, POOLINGS)
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be a positive odd integer, got {self.kernel_size}")


def _choose(field: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{field} {value!r} is not one of: {', '.join(choices)}")


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
    k x k conv itself ("full"); see GLU_MODES for the naive modes. GLUs use
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
        if mode == "split":
            super().__init__(_SplitGatedConv(conv, in_channels, out_channels, options.norm))
            return
        conv_out = 2 * out_channels if mode == "full" else out_channels
        layers = [conv(in_channels, conv_out), make_norm(options.norm, conv_out)]
        if mode == "pointwise":
            layers.append(nn.Conv2d(out_channels, 2 * out_channels, 1))
        elif mode == "dropin":
            layers.append(conv(out_channels, 2 * out_channels))
        layers.append(nn.GLU(dim=1) if mode else make_activation(options.activation))
        super().__init__(*layers)


def _conv_factory(kernel_size: int, dilation: int, bias: bool):
    """A ``conv(in, out)`` maker with "same" padding for this kernel size and dilation."""
    padding = dilation * (kernel_size - 1) // 2

    def conv(in_channels: int, out_channels: int) -> nn.Conv2d:
        return nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding,
                         dilation=dilation, bias=bias)

    return conv


class _SplitGatedConv(nn.Module):
    """The naive GLU conv the benchmark measures: two convs, two norms, an unfused fp32 gate."""

    def __init__(self, conv, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.value, self.gate = conv(in_channels, out_channels), conv(in_channels, out_channels)
        self.value_norm, self.gate_norm = make_norm(norm, out_channels), make_norm(norm, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.value_norm(self.value(x)), self.gate_norm(self.gate(x))
        return (value.float() * torch.sigmoid(gate.float())).to(x.dtype)


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


SKIP_ORDERS = ("resample-then-conv", "conv-then-resample")


def check_skip_order(skip_order: str) -> str:
    """Validate the ``skip_order`` option (raises ConfigError naming the choices)."""
    _choose("skip_order", skip_order, SKIP_ORDERS)
    return skip_order


def check_flag(field: str, value: object) -> bool:
    """Validate an on/off option (a TOML ``true``/``false``, not a string or a number)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{field} must be true or false, got {value!r}")
    return value


def check_dilation_rates(rates: Sequence[int]) -> tuple[int, int]:
    """Validate ``dilation_rates``: two positive integers, one per conv of a DoubleConv."""
    rates = tuple(int(r) for r in rates)
    if len(rates) != 2 or min(rates) < 1:
        raise ConfigError(f"dilation_rates must be two positive integers, got {rates}")
    return rates  # type: ignore[return-value]


@contextlib.contextmanager
def running_stats_kept(module: nn.Module) -> Iterator[None]:
    """Undo what a forward inside the block does to the BatchNorm running statistics of ``module``.

    Activation checkpointing runs a stage's forward a second time during backward; in training
    mode that second pass would update every running mean and variance (and batch count) again,
    so a checkpointed model would evaluate differently from an uncheckpointed one.

    Example:
        >>> bn = nn.BatchNorm2d(2).train()
        >>> with running_stats_kept(bn):
        ...     _ = bn(torch.randn(4, 2, 3, 3) + 5)
        >>> bn.running_mean.tolist(), int(bn.num_batches_tracked)
        ([0.0, 0.0], 0)
    """
    norms = [m for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in norms]
    try:
        yield
    finally:
        for norm, mean, var, count in saved:
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
            norm.num_batches_tracked.copy_(count)


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


# The lab's two enhancements as option presets: Enhanced = 7x7 kernels, a dilated second conv in
# every encoder block, anti-aliased pooling; Enhanced* ("-glu") adds the GLU activation.
ENHANCED = {"kernel_size": 7, "dilation_rates": (1, 2), "pooling": "blur"}
ENHANCED_GLU = {**ENHANCED, "activation": "glu"}
