"""ELU-Net specifics: our reading of the paper's deep skip connections, the variants."""
from __future__ import annotations

import torch
import torch.nn as nn
from kornia.filters import MaxBlurPool2D

from steelseg_hpc.models import build_model
from steelseg_hpc.models.profiling import count_parameters, forward_gflops


def test_decoder_stages_take_previous_same_scale_and_deeper_encoder_maps():
    model = build_model("elunet", base_channels=4)
    # Stage at level 3: previous (bottleneck) + e3; level 2: + e3; level 1: + e2, e3; ...
    assert [len(stage.branches) for stage in model.decoder] == [2, 3, 4, 5]
    widths = [stage.fuse[0][0].out_channels for stage in model.decoder]
    assert widths == [32, 16, 8, 4]  # U-Net decoder widths, not a constant like UNet 3+
    assert all(not branch.down for stage in model.decoder for branch in stage.branches)


def test_paper_width_parameter_count_is_the_documented_one():
    # No published table: this pins the count docs/models.md states for our reading.
    assert count_parameters(build_model("elunet")) == 41_231_747


def test_lighter_than_unet3plus_in_flops():
    elu = forward_gflops(build_model("elunet", base_channels=8), 64)
    u3p = forward_gflops(build_model("unet3plus", base_channels=8), 64)
    assert elu < u3p


def test_enhanced_variants_swap_blocks():
    enhanced = build_model("elunet-enhanced", base_channels=4)
    convs = [m for m in enhanced.modules() if isinstance(m, nn.Conv2d)]
    assert (7, 7) in {c.kernel_size for c in convs}
    assert max(c.dilation[0] for c in convs) > 1
    assert any(isinstance(m, MaxBlurPool2D) for m in enhanced.modules())
    assert not any(isinstance(m, nn.GLU) for m in enhanced.modules())
    glu = build_model("elunet-enhanced-glu", base_channels=4)
    assert any(isinstance(m, nn.GLU) for m in glu.modules())


def test_conv_then_resample_keeps_shape_and_cuts_flops():
    paper = build_model("elunet", base_channels=4).eval()
    cheap = build_model("elunet", base_channels=4, skip_order="conv-then-resample").eval()
    with torch.no_grad():
        assert cheap(torch.randn(1, 1, 96, 80)).shape == (1, 3, 96, 80)
    assert forward_gflops(cheap, 64) < forward_gflops(paper, 64)


def test_deep_supervision_outputs():
    model = build_model("elunet", base_channels=4, deep_supervision=True).train()
    assert len(model(torch.randn(1, 1, 32, 32))) == 4
