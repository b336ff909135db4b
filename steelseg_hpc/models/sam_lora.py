"""Low-rank adaptation (LoRA) of SAM's image encoder, the lab's Algorithm 1.

``SamLoRA(sam, rank, lora_layer)`` freezes ``sam.image_encoder`` and, for every chosen block,
replaces the fused ``blk.attn.qkv`` Linear by :class:`LoRA_qkv`, which adds ``B_q(A_q x)`` to
the query part and ``B_v(A_v x)`` to the value part and leaves the key part untouched. ``A`` is
Kaiming-uniform and ``B`` zero, so the adapted model starts exactly equal to SAM. Rank 0 means
plain fine-tuning: no adapters, the whole encoder trainable.

Example:
    >>> from steelseg_hpc.models.sam_build import build_tiny_sam
    >>> lora = SamLoRA(build_tiny_sam(), rank=4)
    >>> len(lora.A_weights), len(lora.B_weights)  # q and v adapters of 2 blocks
    (4, 4)
    >>> sum(p.numel() for p in lora.lora_vit.parameters() if p.requires_grad)  # 2 blocks * 2 * (64*4 + 4*64)
    2048
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from segment_anything.modeling import Sam

from steelseg_hpc.core.errors import ConfigError


class LoRA_qkv(nn.Module):  # noqa: N801 - named as in the lab's Algorithm 1
    """The fused q-k-v projection plus low-rank updates of q and v.

    Args:
        qkv: SAM's ``Linear(dim, 3 * dim)``; frozen by the caller.
        linear_a_q: ``A_q``, ``Linear(dim, r, bias=False)``.
        linear_b_q: ``B_q``, ``Linear(r, dim, bias=False)``.
        linear_a_v: ``A_v``.
        linear_b_v: ``B_v``.
    """

    def __init__(
        self, qkv: nn.Linear, linear_a_q: nn.Linear, linear_b_q: nn.Linear, linear_a_v: nn.Linear, linear_b_v: nn.Linear
    ) -> None:
        super().__init__()
        self.qkv = qkv
        self.linear_a_q = linear_a_q
        self.linear_b_q = linear_b_q
        self.linear_a_v = linear_a_v
        self.linear_b_v = linear_b_v
        self.dim = qkv.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        delta_q = self.linear_b_q(self.linear_a_q(x))
        delta_v = self.linear_b_v(self.linear_a_v(x))
        # In-place on the Linear's output is safe for autograd (its backward does not read its
        # output) and saves a [.., 3*dim] copy per block; the middle (k) third is never touched.
        qkv[..., : self.dim] += delta_q
        qkv[..., -self.dim :] += delta_v
        return qkv


class SamLoRA(nn.Module):
    """SAM with LoRA adapters on the q and v projections of chosen image-encoder blocks.

    Args:
        sam: A ``segment_anything`` ``Sam`` (any variant); modified in place.
        rank: LoRA rank ``r >= 0``; 0 trains the whole image encoder without adapters.
        lora_layer: Indices of the blocks to adapt; ``None`` means every block.

    Attributes:
        sam: The wrapped model (prompt encoder and mask decoder untouched here).
        lora_vit: ``sam.image_encoder``.
        A_weights: ``[A_q, A_v]`` per adapted block, in block order (a plain list: the modules
            are registered once, inside the blocks, so state dicts hold no duplicates).
        B_weights: ``[B_q, B_v]`` per adapted block.

    Raises:
        ConfigError: Negative rank or a block index out of range.
    """

    def __init__(self, sam: Sam, rank: int, lora_layer: Sequence[int] | None = None) -> None:
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise ConfigError(f"LoRA rank must be an integer >= 0, got {rank!r}")
        blocks = sam.image_encoder.blocks
        chosen = list(range(len(blocks))) if lora_layer is None else sorted({int(i) for i in lora_layer})
        if any(not 0 <= i < len(blocks) for i in chosen):
            raise ConfigError(
                f"lora_layer {list(lora_layer or [])} has block indices outside 0..{len(blocks) - 1}"
            )
        self.rank = rank
        self.lora_layer = chosen if rank > 0 else []
        self.A_weights: list[nn.Linear] = []
        self.B_weights: list[nn.Linear] = []
        for param in sam.image_encoder.parameters():
            param.requires_grad = rank == 0  # rank 0: plain fine-tuning of the encoder
        for index in self.lora_layer:
            attention = blocks[index].attn
            qkv: nn.Linear = attention.qkv
            dim = qkv.in_features
            factory = {"device": qkv.weight.device, "dtype": qkv.weight.dtype}
            a_q, b_q = nn.Linear(dim, rank, bias=False, **factory), nn.Linear(rank, dim, bias=False, **factory)
            a_v, b_v = nn.Linear(dim, rank, bias=False, **factory), nn.Linear(rank, dim, bias=False, **factory)
            self.A_weights += [a_q, a_v]
            self.B_weights += [b_q, b_v]
            attention.qkv = LoRA_qkv(qkv, a_q, b_q, a_v, b_v)
        self.reset_parameters()
        self.sam = sam

    @property
    def lora_vit(self) -> nn.Module:
        """``sam.image_encoder`` (a property, not a second registration: the state dict and the
        checkpoints would otherwise hold the encoder twice, once under each name)."""
        return self.sam.image_encoder

    def reset_parameters(self) -> None:
        """A Kaiming-uniform (as ``nn.Linear`` does), B zeros: the adapters start as identity."""
        for linear_a in self.A_weights:
            nn.init.kaiming_uniform_(linear_a.weight, a=math.sqrt(5))
        for linear_b in self.B_weights:
            nn.init.zeros_(linear_b.weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``[B, 256, S/16, S/16]`` of SAM-preprocessed images ``[B, 3, S, S]``."""
        return self.lora_vit(images)


def lora_modules(module: nn.Module) -> list[LoRA_qkv]:
    """Every :class:`LoRA_qkv` inside ``module``, in registration order."""
    return [m for m in module.modules() if isinstance(m, LoRA_qkv)]
