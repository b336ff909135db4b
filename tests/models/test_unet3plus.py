"""UNet 3+ specifics: the paper's parameter count, the Enhanced blocks, the options."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from kornia.filters import MaxBlurPool2D

from steelseg_hpc.models import build_model
from steelseg_hpc.models.profiling import count_parameters, forward_gflops


def _convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_paper_width_matches_the_published_parameter_count():
    # Huang et al. report 26.97 M; counting parameters needs no forward pass.
    model = build_model("unet3plus", in_channels=1, num_classes=3)
    assert round(count_parameters(model) / 1e6, 2) == 26.97


def test_vanilla_has_none_of_the_enhancements():
    model = build_model("unet3plus", base_channels=4)
    assert {c.kernel_size for c in _convs(model)} == {(3, 3)}
    assert {c.dilation for c in _convs(model)} == {(1, 1)}
    assert not any(isinstance(m, (MaxBlurPool2D, nn.GLU)) for m in model.modules())


@pytest.mark.slow
def test_enhanced_has_7x7_dilation_and_blur_pooling():
    for name in ("unet3plus-enhanced", "unet3plus-enhanced-glu"):
        model = build_model(name, base_channels=4)
        assert (7, 7) in {c.kernel_size for c in _convs(model)}
        assert max(c.dilation[0] for c in _convs(model)) > 1
        assert any(isinstance(m, MaxBlurPool2D) for m in model.modules())
        assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert not any(isinstance(m, nn.GLU) for m in build_model("unet3plus-enhanced").modules())
    assert any(isinstance(m, nn.GLU) for m in build_model("unet3plus-enhanced-glu").modules())


def test_presets_are_options_so_an_ablation_is_a_config_change():
    ablated = build_model("unet3plus-enhanced", base_channels=4, pooling="max")
    assert not any(isinstance(m, MaxBlurPool2D) for m in ablated.modules())
    assert count_parameters(build_model("unet3plus", base_channels=4, kernel_size=7,
                                        dilation_rates=(1, 2), pooling="blur")) == \
        count_parameters(build_model("unet3plus-enhanced", base_channels=4))


def test_every_decoder_stage_gathers_five_scales():
    model = build_model("unet3plus", base_channels=4)
    assert [len(stage.branches) for stage in model.decoder] == [5, 5, 5, 5]
    assert all(stage.fuse[0].in_channels == 20 for stage in model.decoder)


@pytest.mark.slow
def test_conv_then_resample_keeps_shape_and_cuts_flops():
    paper = build_model("unet3plus", base_channels=4).eval()
    cheap = build_model("unet3plus", base_channels=4, skip_order="conv-then-resample").eval()
    assert count_parameters(paper) == count_parameters(cheap)
    x = torch.randn(1, 1, 96, 80)
    with torch.no_grad():
        assert cheap(x).shape == paper(x).shape == (1, 3, 96, 80)
    assert forward_gflops(cheap, 64) < 0.7 * forward_gflops(paper, 64)


@pytest.mark.slow
def test_classification_guided_module_gates_and_learns():
    model = build_model("unet3plus", base_channels=4, classification_guided=True).train()
    out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 3, 32, 32)
    out.mean().backward()
    assert model.classifier[1].weight.grad is not None and model.classifier[1].weight.grad.any()


def test_deep_supervision_gives_five_outputs_main_first():
    # GroupNorm behaves the same in train and eval, so the main output must be the eval output.
    torch.manual_seed(0)
    model = build_model("unet3plus", base_channels=4, norm="group", deep_supervision=True)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        outputs = model.train()(x)
        main = model.eval()(x)
    assert len(outputs) == 5
    assert torch.allclose(outputs[0], main)
    assert not torch.allclose(outputs[1], main)
