"""Naive GLU blocks, reproduced for the benchmark only (docs/models.md, "The GLU blow-up").

They show what the Enhanced* blow-up cost and are no model option: a run config's ``glu_mode`` is
"pointwise" or "full". ``benchmarks/models.py`` builds a GLU model and swaps its blocks:

- "split": separate value and gate k x k convs, each with its own norm, and an unfused fp32
  a * sigmoid(b);
- "dropin": the k x k conv and its norm, then a drop-in gated activation that has its own
  k x k conv C -> 2C.

Example:
    >>> import torch
    >>> from steelseg_hpc.models import build_model
    >>> model = with_naive_glu(build_model("unet3plus-enhanced-glu", base_channels=4), "split")
    >>> model(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 3, 32, 32])
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from steelseg_hpc.models.blocks import ConvNormAct

NAIVE_GLU_MODES = ("split", "dropin")


def with_naive_glu(model: nn.Module, mode: str) -> nn.Module:
    """Replace every pointwise-GLU :class:`ConvNormAct` of ``model`` by the naive block ``mode``.

    The naive block keeps the k x k conv and norm of the one it replaces. Returns ``model``.
    """
    if mode not in NAIVE_GLU_MODES:
        raise ValueError(f"naive GLU mode {mode!r} is not one of: {', '.join(NAIVE_GLU_MODES)}")
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ConvNormAct) and child.glu_mode == "pointwise":
                setattr(parent, name, _naive_block(child, mode))
    return model


def _naive_block(block: ConvNormAct, mode: str) -> nn.Module:
    conv, norm = block[0], block[1]
    if mode == "split":
        return _SplitGatedConv(conv, _same_conv(conv, conv.in_channels, conv.out_channels),
                               norm, copy.deepcopy(norm))
    return nn.Sequential(conv, norm, _same_conv(conv, conv.out_channels, 2 * conv.out_channels),
                         nn.GLU(dim=1))


def _same_conv(like: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    """A conv with the kernel, padding, dilation and bias of ``like``."""
    return nn.Conv2d(in_channels, out_channels, like.kernel_size, padding=like.padding,
                     dilation=like.dilation, bias=like.bias is not None)


class _SplitGatedConv(nn.Module):
    """The naive GLU conv the benchmark measures: two convs, two norms, an unfused fp32 gate."""

    def __init__(self, value: nn.Conv2d, gate: nn.Conv2d, value_norm: nn.Module, gate_norm: nn.Module) -> None:
        super().__init__()
        self.value, self.gate = value, gate
        self.value_norm, self.gate_norm = value_norm, gate_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.value_norm(self.value(x)), self.gate_norm(self.gate(x))
        return (value.float() * torch.sigmoid(gate.float())).to(x.dtype)
