"""Options that change how a model computes, not what: chunked resizes, activation checkpointing,
channels-last activations (issue 13). Each must give the plain model's outputs and gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.models import architectures, build_model
from steelseg_hpc.models import resize
from steelseg_hpc.models.profiling import measure_step
from steelseg_hpc.models.resize import upsample_to
from steelseg_hpc.training.channels_last import channels_last_activations

DENSE = [arch.name for arch in architectures() if arch.width_option == "base_channels"]
WIDTH = 4


def _loss_and_grads(model: nn.Module, x: torch.Tensor, masks: torch.Tensor):
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), masks)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def _twin(name: str, **options) -> tuple[nn.Module, nn.Module]:
    """The plain model and one with ``options``, holding the same weights."""
    torch.manual_seed(0)
    plain = build_model(name, base_channels=WIDTH).train()
    other = build_model(name, base_channels=WIDTH, **options).train()
    other.load_state_dict(plain.state_dict())
    return plain, other


class _CountingResize:
    """Wraps resize._bilinear to record the size of every resize it writes."""

    def __init__(self, original):
        self.original, self.outputs = original, []

    def __call__(self, x, size):
        out = self.original(x, size)
        self.outputs.append(out.numel())
        return out


@pytest.mark.parametrize("limit,calls", [(1700, 2), (1000, 3), (300, 15), (100, 15)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_resize_over_the_limit_is_sliced_and_exactly_equal(monkeypatch, limit, calls, channels_last):
    # [3, 5, 6, 7] -> 12 x 14: 168 per plane, 840 per sample, 2520 in all.
    x = torch.randn(3, 5, 6, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    grad_out = torch.randn(3, 5, 12, 14)
    expected = upsample_to(x, (12, 14))
    (expected_grad,) = torch.autograd.grad(expected, x, grad_out)

    counter = _CountingResize(resize._bilinear)
    monkeypatch.setattr(resize, "_bilinear", counter)
    monkeypatch.setattr(resize, "MAX_RESIZE_ELEMENTS", limit)
    sliced = upsample_to(x, (12, 14))
    (sliced_grad,) = torch.autograd.grad(sliced, x, grad_out)

    assert len(counter.outputs) == calls
    # A single plane is never split, so a limit below one plane still writes one plane per call.
    assert max(counter.outputs) <= max(limit, 168)
    assert torch.equal(sliced, expected) and torch.equal(sliced_grad, expected_grad)


def test_resize_under_the_limit_is_one_call(monkeypatch):
    counter = _CountingResize(resize._bilinear)
    monkeypatch.setattr(resize, "_bilinear", counter)
    upsample_to(torch.randn(16, 8, 5, 5), (10, 10))
    assert counter.outputs == [16 * 8 * 100]


def test_the_default_limit_is_int_max():
    assert resize.MAX_RESIZE_ELEMENTS == 2**31 - 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet3plus", "elunet"])
def test_a_model_with_a_tiny_resize_limit_computes_exactly_the_same(monkeypatch, name):
    torch.manual_seed(0)
    model = build_model(name, base_channels=WIDTH).train()
    x, masks = torch.randn(2, 1, 64, 64), torch.randint(0, 3, (2, 64, 64))
    whole = _CountingResize(resize._bilinear)
    monkeypatch.setattr(resize, "_bilinear", whole)
    loss, grads = _loss_and_grads(model, x, masks)
    sliced = _CountingResize(whole.original)
    monkeypatch.setattr(resize, "_bilinear", sliced)
    monkeypatch.setattr(resize, "MAX_RESIZE_ELEMENTS", 5000)  # above one 64 x 64 plane
    sliced_loss, sliced_grads = _loss_and_grads(model, x, masks)
    assert max(whole.outputs) > 5000 >= max(sliced.outputs)
    assert len(sliced.outputs) > len(whole.outputs)
    assert torch.equal(sliced_loss, loss)
    # Each resize's gradient is exact (above), but a map feeding several branches sums their
    # gradients in an order that follows the graph, so sums of three can differ in the last bit.
    for key in grads:
        torch.testing.assert_close(sliced_grads[key], grads[key], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("name", DENSE)
def test_activation_checkpointing_gives_the_same_loss_gradients_and_running_stats(name):
    plain, checkpointed = _twin(name, activation_checkpointing=True)
    assert all(stage.checkpointed for stage in checkpointed.decoder)
    x, masks = torch.randn(2, 1, 48, 48), torch.randint(0, 3, (2, 48, 48))
    loss, grads = _loss_and_grads(plain, x, masks)
    ckpt_loss, ckpt_grads = _loss_and_grads(checkpointed, x, masks)
    torch.testing.assert_close(ckpt_loss, loss, rtol=1e-6, atol=1e-7)
    for key in grads:
        torch.testing.assert_close(ckpt_grads[key], grads[key], rtol=1e-5, atol=1e-7)
    # The recomputation in backward must not update BatchNorm's running statistics a second time.
    for (key, value), other in zip(plain.state_dict().items(), checkpointed.state_dict().values()):
        assert torch.equal(value, other), key


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet3plus", "elunet"])
def test_activation_checkpointing_lowers_peak_training_memory(name):
    plain, checkpointed = _twin(name, activation_checkpointing=True)
    x, masks = torch.randn(2, 1, 64, 64), torch.randint(0, 3, (2, 64, 64))
    _, plain_peak = measure_step(plain, x, masks, repeats=0, warmup=0)
    _, ckpt_peak = measure_step(checkpointed, x, masks, repeats=0, warmup=0)
    assert ckpt_peak < 0.9 * plain_peak


def test_activation_checkpointing_is_off_in_eval_and_without_grad():
    plain, checkpointed = _twin("unet3plus", activation_checkpointing=True)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(checkpointed.eval()(x), plain.eval()(x))


def test_activation_checkpointing_must_be_a_boolean():
    with pytest.raises(ConfigError, match="activation_checkpointing"):
        build_model("unet3plus", base_channels=WIDTH, activation_checkpointing="yes")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet3plus", "elunet-enhanced-glu"])
def test_channels_last_activations_equal_the_default_and_are_channels_last(name):
    plain, other = _twin(name)
    channels_last_activations(other)
    formats = []

    def record(module, inputs, output):
        formats.append(output.is_contiguous(memory_format=torch.channels_last) and not output.is_contiguous())

    for module in other.modules():
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)) and getattr(module, "out_channels", 2) > 1:
            module.register_forward_hook(record)
    x, masks = torch.randn(2, 1, 48, 48), torch.randint(0, 3, (2, 48, 48))
    loss, grads = _loss_and_grads(plain, x, masks)
    cl_loss, cl_grads = _loss_and_grads(other, x.contiguous(memory_format=torch.channels_last), masks)
    assert formats and all(formats)
    torch.testing.assert_close(cl_loss, loss, rtol=1e-5, atol=1e-6)
    for key in grads:
        torch.testing.assert_close(cl_grads[key], grads[key], rtol=1e-4, atol=1e-5)
    # Parameters keep their layout: DeepSpeed needs them contiguous.
    assert all(p.is_contiguous() for p in other.parameters())
