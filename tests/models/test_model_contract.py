"""The dense-model contract (docs/contracts.md), run for every registered architecture with a width.

Like smp's BaseModelTester: one suite, every architecture the registry lists, so a new
architecture is tested without editing a list here. Tiny widths and tiles keep it fast.
"""
from __future__ import annotations

import io

import pytest
import torch

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.models import architecture, architectures, build_model

# Dense models with a width option: the contract below builds them at a tiny width.
DENSE = [arch.name for arch in architectures() if arch.width_option == "base_channels"]

WIDTH = 4


def test_the_registry_holds_the_lab_zoo_with_families_and_vanillas():
    assert len(DENSE) == 6
    for name in DENSE:
        arch = architecture(name)
        assert arch.family in ("unet3plus", "elunet") and arch.loss == "dense"
        assert arch.vanilla == arch.family and arch.checkpoint == "full" and arch.summary
    sam = architecture("sam-lora")
    assert (sam.family, sam.loss, sam.width_option, sam.checkpoint) == ("sam", "sam", None, "trainable")


@pytest.mark.parametrize("name", DENSE)
class TestModelContract:
    @pytest.mark.parametrize("height,width", [(96, 80), (33, 47), (16, 16)])
    def test_logits_keep_input_size(self, name, height, width):
        model = build_model(name, in_channels=1, num_classes=5, base_channels=WIDTH).eval()
        with torch.no_grad():
            out = model(torch.randn(2, 1, height, width))
        assert out.shape == (2, 5, height, width)
        assert torch.isfinite(out).all()

    def test_in_channels_is_honoured(self, name):
        model = build_model(name, in_channels=3, num_classes=2, base_channels=WIDTH).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 32, 48)).shape == (1, 2, 32, 48)

    def test_gradients_reach_every_parameter(self, name):
        torch.manual_seed(0)
        model = build_model(name, base_channels=WIDTH, deep_supervision=True).train()
        outputs = model(torch.randn(2, 1, 48, 40))
        sum(o.square().mean() for o in outputs).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
        assert missing == []

    def test_deep_supervision_list_only_when_training(self, name):
        model = build_model(name, num_classes=3, base_channels=WIDTH, deep_supervision=True)
        x = torch.randn(1, 1, 40, 56)
        outputs = model.train()(x)
        assert isinstance(outputs, list) and len(outputs) >= 2
        assert all(o.shape == (1, 3, 40, 56) for o in outputs)
        with torch.no_grad():
            main = model.eval()(x)
        assert isinstance(main, torch.Tensor) and main.shape == (1, 3, 40, 56)

    def test_state_dict_round_trip(self, name):
        torch.manual_seed(0)
        model = build_model(name, base_channels=WIDTH).eval()
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        buffer.seek(0)
        torch.manual_seed(1)
        clone = build_model(name, base_channels=WIDTH).eval()
        clone.load_state_dict(torch.load(buffer))
        x = torch.randn(1, 1, 32, 32)
        with torch.no_grad():
            assert torch.equal(model(x), clone(x))

    def test_bf16_autocast_forward_backward(self, name):
        model = build_model(name, base_channels=WIDTH).train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(torch.randn(2, 1, 32, 32))
        out.float().mean().backward()
        assert torch.isfinite(out.float()).all()

    def test_bad_options_are_config_errors(self, name):
        with pytest.raises(ConfigError, match="no_such_option"):
            build_model(name, base_channels=WIDTH, no_such_option=1)
        with pytest.raises(ConfigError, match="pooling"):
            build_model(name, base_channels=WIDTH, pooling="median")
        with pytest.raises(ConfigError, match="skip_order"):
            build_model(name, base_channels=WIDTH, skip_order="sideways")
