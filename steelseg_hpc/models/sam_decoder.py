"""Adapt SAM's mask decoder to C classes and set which prompt/decoder parts train.

SAM's decoder has 4 mask tokens (token 0 for a single mask, 1-3 for its three ambiguity
outputs), each with a hypernetwork MLP, and an IoU head scoring each token. In ``none`` mode
(SAMed-like) the decoder needs one output per class, so :func:`expand_mask_decoder` grows
tokens 1..C, their MLPs and the IoU head's last layer, initialising the new ones from the
pretrained multimask tokens in turn so every class starts from a trained token.

Example:
    >>> from steelseg_hpc.models.sam_build import build_tiny_sam
    >>> decoder = build_tiny_sam().mask_decoder
    >>> expand_mask_decoder(decoder, num_classes=5)
    >>> decoder.num_mask_tokens, len(decoder.output_hypernetworks_mlps)
    (6, 6)
"""
from __future__ import annotations

import copy
import logging
import math

import torch
import torch.nn as nn
from segment_anything.modeling import MaskDecoder, PromptEncoder
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom

logger = logging.getLogger(__name__)


def _source_token(index: int, pretrained_multimask: int) -> int:
    """Pretrained token to copy into new token ``index``: 0 stays 0, then 1, 2, 3, 1, 2, ..."""
    return 0 if index == 0 else 1 + (index - 1) % pretrained_multimask


def expand_mask_decoder(decoder: MaskDecoder, num_classes: int) -> None:
    """Give ``decoder`` exactly ``num_classes`` multimask outputs, in place.

    After this, ``decoder(..., multimask_output=True)`` returns ``[N, num_classes, h, w]``.

    Args:
        decoder: A ``segment_anything`` ``MaskDecoder``.
        num_classes: Number of semantic classes (>= 1).
    """
    old_multimask = decoder.num_multimask_outputs
    if num_classes == old_multimask:
        return
    tokens = num_classes + 1
    sources = [_source_token(i, old_multimask) for i in range(tokens)]
    old_tokens = decoder.mask_tokens.weight.data
    decoder.mask_tokens = nn.Embedding(tokens, old_tokens.shape[1]).to(old_tokens)
    decoder.mask_tokens.weight.data.copy_(old_tokens[sources])
    decoder.output_hypernetworks_mlps = nn.ModuleList(
        copy.deepcopy(decoder.output_hypernetworks_mlps[s]) for s in sources
    )
    last: nn.Linear = decoder.iou_prediction_head.layers[-1]
    grown = nn.Linear(last.in_features, tokens).to(last.weight)
    with torch.no_grad():
        grown.weight.copy_(last.weight[sources])
        grown.bias.copy_(last.bias[sources])
    decoder.iou_prediction_head.layers[-1] = grown
    decoder.num_multimask_outputs = num_classes
    decoder.num_mask_tokens = tokens


def set_trainable_parts(
    decoder: MaskDecoder,
    prompt_encoder: PromptEncoder,
    prompt: str,
    train_mask_decoder: bool,
    train_prompt_encoder: bool,
) -> None:
    """Set ``requires_grad`` on the decoder and prompt encoder.

    Parts that can never receive a gradient in the chosen mode stay frozen so that trainable
    counts, saved weights and distributed gradient reduction only see what actually learns:
    the IoU head (its scores feed no loss here), the single-mask MLP in ``none`` mode (which
    uses the multimask outputs) and the multimask MLPs in ``box`` mode (one mask per box).

    Args:
        decoder: SAM's mask decoder (already expanded in ``none`` mode).
        prompt_encoder: SAM's prompt encoder.
        prompt: ``"none"`` or ``"box"``.
        train_mask_decoder: Train the mask decoder.
        train_prompt_encoder: Train the prompt encoder.
    """
    for param in decoder.parameters():
        param.requires_grad = train_mask_decoder
    for param in prompt_encoder.parameters():
        param.requires_grad = train_prompt_encoder
    unused = [decoder.iou_prediction_head]
    mlps = decoder.output_hypernetworks_mlps
    unused += [mlps[0]] if prompt == "none" else list(mlps[1:])
    for module in unused:
        for param in module.parameters():
            param.requires_grad = False
    if prompt == "none" and not train_mask_decoder:
        logger.warning("SAM none mode with a frozen mask decoder: the class tokens never learn")


class DtypeFollowingPositionEmbedding(PositionEmbeddingRandom):
    """SAM's random-Fourier position encoding, computed in float32, returned in the model dtype.

    The package multiplies float32 coordinates by its frequency buffer, which fails once the
    whole model is cast to bf16 (DeepSpeed's ``bf16`` mode). This computes in float32 and
    returns the buffer's dtype: unchanged results for a float32 model.
    """

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        frequencies = self.positional_encoding_gaussian_matrix
        phases = 2 * math.pi * ((2 * coords.float() - 1) @ frequencies.float())
        return torch.cat([torch.sin(phases), torch.cos(phases)], dim=-1).to(frequencies.dtype)


def make_position_embedding_dtype_safe(prompt_encoder: PromptEncoder) -> None:
    """Swap the prompt encoder's position encoding for :class:`DtypeFollowingPositionEmbedding`.

    The frequency buffer is moved over as is (no new random draw, same state-dict key).
    """
    old = prompt_encoder.pe_layer
    new = DtypeFollowingPositionEmbedding.__new__(DtypeFollowingPositionEmbedding)
    nn.Module.__init__(new)
    new.register_buffer("positional_encoding_gaussian_matrix", old.positional_encoding_gaussian_matrix)
    prompt_encoder.pe_layer = new
