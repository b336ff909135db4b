"""The small named blocks the zoo is built from."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from kornia.filters import MaxBlurPool2D

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.models.base import pad_to_multiple
from steelseg_hpc.models.blocks import ConvNormAct, DoubleConv, Downsample, SkipProjection, make_norm
from steelseg_hpc.models.naive_glu import NAIVE_GLU_MODES, with_naive_glu
from steelseg_hpc.models.options import BlockOptions
from steelseg_hpc.models.resize import upsample_to


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "leaky_relu", "glu"])
@pytest.mark.parametrize("kernel_size,dilation", [(3, 1), (7, 2), (5, 3)])
def test_conv_norm_act_keeps_size_and_sets_width(activation, kernel_size, dilation):
    block = ConvNormAct(3, 6, BlockOptions(kernel_size=kernel_size, activation=activation),
                        dilation=dilation)
    assert block(torch.randn(2, 3, 20, 12)).shape == (2, 6, 20, 12)
    conv = block[0] if isinstance(block[0], nn.Conv2d) else None
    assert conv is not None and conv.kernel_size == (kernel_size, kernel_size)
    assert conv.dilation == (dilation, dilation)


@pytest.mark.parametrize("mode", ["pointwise", "full"])
def test_every_glu_mode_gates_channels_not_width(mode):
    block = ConvNormAct(4, 6, BlockOptions(activation="glu", glu_mode=mode))
    assert block(torch.randn(1, 4, 8, 10)).shape == (1, 6, 8, 10)
    glus = [m for m in block.modules() if isinstance(m, nn.GLU)]
    assert len(glus) == 1 and glus[0].dim == 1  # nn.GLU's default dim=-1 would halve the width


@pytest.mark.parametrize("mode", NAIVE_GLU_MODES)
def test_the_benchmarks_naive_glu_blocks_replace_the_glu_blocks_and_gate_channels(mode):
    with pytest.raises(ConfigError, match="glu_mode"):
        BlockOptions(activation="glu", glu_mode=mode)  # no option: only the benchmark swaps them in
    model = with_naive_glu(nn.Sequential(ConvNormAct(4, 6, BlockOptions(activation="glu"))), mode)
    assert not any(isinstance(m, ConvNormAct) for m in model.modules())
    assert model(torch.randn(1, 4, 8, 10)).shape == (1, 6, 8, 10)
    glus = [m for m in model.modules() if isinstance(m, nn.GLU)]
    assert all(g.dim == 1 for g in glus) and (len(glus) == 1) == (mode != "split")


def test_pointwise_glu_is_much_cheaper_than_full_glu():
    def params(mode):
        block = ConvNormAct(32, 32, BlockOptions(kernel_size=7, activation="glu", glu_mode=mode))
        return sum(p.numel() for p in block.parameters())

    relu = sum(p.numel() for p in ConvNormAct(32, 32, BlockOptions(kernel_size=7)).parameters())
    assert params("pointwise") < 1.1 * relu < 1.9 * relu < params("full")


@pytest.mark.parametrize("norm,kind", [("batch", nn.BatchNorm2d), ("group", nn.GroupNorm),
                                       ("instance", nn.InstanceNorm2d), ("none", nn.Identity)])
def test_norms(norm, kind):
    assert isinstance(make_norm(norm, 12), kind)
    block = ConvNormAct(2, 12, BlockOptions(norm=norm))
    assert (block[0].bias is not None) == (norm == "none")


def test_group_norm_fits_odd_widths():
    assert make_norm("group", 6).num_groups == 6
    assert make_norm("group", 12).num_groups == 6
    assert make_norm("group", 7).num_groups == 7


@pytest.mark.parametrize("field,value", [("norm", "layer"), ("activation", "tanh"),
                                         ("pooling", "median"), ("glu_mode", "x"),
                                         ("kernel_size", 4)])
def test_invalid_options_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        BlockOptions(**{field: value})


@pytest.mark.parametrize("pooling", ["max", "avg", "blur"])
@pytest.mark.parametrize("factor", [1, 2, 8])
def test_downsample_factor(pooling, factor):
    out = Downsample(factor, pooling)(torch.randn(1, 2, 32, 48))
    assert out.shape == (1, 2, 32 // factor, 48 // factor)


def test_blur_pooling_is_kornias_anti_aliased_max_pool():
    pool = Downsample(4, "blur")
    assert sum(isinstance(m, MaxBlurPool2D) for m in pool.modules()) == 2
    # Zhang's point: a one-pixel shift of the input moves a blur-pooled map far less than a
    # max-pooled one (compared away from the zero-padded border).
    torch.manual_seed(0)
    image = torch.rand(1, 1, 64, 64)
    shifted = torch.roll(image, shifts=1, dims=-1)

    def change(pooling):
        a, b = Downsample(2, pooling)(image), Downsample(2, pooling)(shifted)
        return (a - b)[..., 2:-2, 2:-2].abs().mean()

    assert change("blur") < 0.7 * change("max")


def test_pad_to_multiple_and_upsample():
    x = torch.arange(17 * 33, dtype=torch.float32).view(1, 1, 17, 33)
    padded = pad_to_multiple(x, 16)
    assert padded.shape == (1, 1, 32, 48)
    assert torch.equal(padded[..., :17, :33], x)
    assert pad_to_multiple(torch.zeros(1, 1, 3, 5), 16).shape == (1, 1, 16, 16)  # replicate
    assert upsample_to(x, (17, 33)) is x
    assert upsample_to(x, (34, 66)).shape == (1, 1, 34, 66)


def test_double_conv_dilation_rates():
    block = DoubleConv(1, 4, BlockOptions(kernel_size=7), dilation_rates=(1, 2))
    assert [m.dilation for m in block.modules() if isinstance(m, nn.Conv2d)] == [(1, 1), (2, 2)]


@pytest.mark.parametrize("order", ["resample-then-conv", "conv-then-resample"])
def test_skip_projection_orders_give_the_same_shape(order):
    coarse = torch.randn(1, 16, 4, 4)
    projection = SkipProjection(16, 3, BlockOptions(), 3, order, coarser=True)
    assert projection(coarse, (16, 16)).shape == (1, 3, 16, 16)
    fine = SkipProjection(16, 3, BlockOptions(), 3, order, down_factor=4)
    assert fine(torch.randn(1, 16, 16, 16), (4, 4)).shape == (1, 3, 4, 4)
