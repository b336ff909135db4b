"""SAM's image-encoder attention through ``torch.nn.functional.scaled_dot_product_attention``.

The package's ``Attention`` materialises ``softmax(q k^T * scale + bias)`` in eager PyTorch.
:class:`SdpaAttention` computes the same thing with SDPA, passing SAM's decomposed
relative-position bias (``rel_h[q_row, k_row] + rel_w[q_col, k_col]``) as the additive
``attn_mask``, so CUDA can use its fused memory-efficient kernel. It shares the original
module's parameters under the same names, so state dicts and LoRA adapters are unaffected.

Example:
    >>> from steelseg_hpc.models.sam_build import build_tiny_sam
    >>> encoder = build_tiny_sam().image_encoder
    >>> use_sdpa_attention(encoder)
    2
    >>> type(encoder.blocks[0].attn).__name__
    'SdpaAttention'
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, get_rel_pos


def decomposed_rel_pos_bias(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """SAM's relative-position term as a dense additive attention bias.

    Args:
        q: Unscaled queries ``[B, heads, H*W, C]`` (SAM adds the bias from unscaled q).
        rel_pos_h: Height table ``[2H-1 or any length, C]`` (interpolated if needed, as SAM does).
        rel_pos_w: Width table ``[2W-1 or any length, C]``.
        grid: Token grid ``(H, W)`` of queries and keys (self-attention).

    Returns:
        Bias ``[B, heads, H*W, H*W]`` in q's dtype.

    Example:
        >>> q = torch.zeros(1, 2, 4, 8)
        >>> decomposed_rel_pos_bias(q, torch.ones(3, 8), torch.ones(3, 8), (2, 2)).shape
        torch.Size([1, 2, 4, 4])
    """
    height, width = grid
    batch, heads, tokens, channels = q.shape
    table_h = get_rel_pos(height, height, rel_pos_h).to(q.dtype)  # [H, H, C]
    table_w = get_rel_pos(width, width, rel_pos_w).to(q.dtype)  # [W, W, C]
    q_grid = q.reshape(batch, heads, height, width, channels)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", q_grid, table_h)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", q_grid, table_w)
    bias = rel_h[..., :, None] + rel_w[..., None, :]  # [B, n, H, W, kH, kW]
    return bias.reshape(batch, heads, tokens, height * width)


class SdpaAttention(nn.Module):
    """Drop-in replacement for ``segment_anything``'s encoder ``Attention`` using SDPA.

    Args:
        attention: The module to replace; its ``qkv``, ``proj`` and relative-position tables
            are shared, not copied.
    """

    def __init__(self, attention: Attention) -> None:
        super().__init__()
        self.num_heads = attention.num_heads
        self.scale = attention.scale
        self.qkv = attention.qkv
        self.proj = attention.proj
        self.use_rel_pos = attention.use_rel_pos
        if self.use_rel_pos:
            self.rel_pos_h = attention.rel_pos_h
            self.rel_pos_w = attention.rel_pos_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, heads, H*W, C]
        bias = None
        if self.use_rel_pos:
            bias = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (height, width))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.view(batch, self.num_heads, height, width, -1).permute(0, 2, 3, 1, 4)
        return self.proj(out.reshape(batch, height, width, -1))


def use_sdpa_attention(image_encoder: nn.Module) -> int:
    """Swap every block's ``Attention`` for :class:`SdpaAttention`, in place.

    Args:
        image_encoder: A SAM ``ImageEncoderViT`` (blocks may already carry LoRA adapters).

    Returns:
        The number of blocks swapped (already swapped blocks are skipped).
    """
    swapped = 0
    for block in image_encoder.blocks:
        if isinstance(block.attn, Attention):
            block.attn = SdpaAttention(block.attn)
            swapped += 1
    return swapped
