"""``sam-lora``: multi-class semantic segmentation with a LoRA-adapted SAM.

Two modes, both trained by the same engine:

- ``prompt="none"`` (SAMed-like): no prompts; the mask decoder emits one mask per class, and
  ``model(x)`` with ``x [B, 1, H, W]`` in [0, 1] returns class logits ``[B, C, H, W]`` at the
  tile's pixels, like the CNNs.
- ``prompt="box"`` (the lab's training): the ground-truth mask's connected components give box
  prompts; :meth:`SamSegmenter.loss_and_logits` returns the per-box loss and the per-box
  logits merged into a semantic map (metrics from it use ground-truth boxes).

Example:
    >>> from steelseg_hpc.models import build_model
    >>> model = build_model("sam-lora", num_classes=3, rank=4, variant="tiny")
    >>> model(torch.rand(2, 1, 40, 56)).shape
    torch.Size([2, 3, 40, 56])
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.models import sam_io
from steelseg_hpc.models.registry import register
from steelseg_hpc.models.sam_attention import use_sdpa_attention
from steelseg_hpc.models.sam_box_prompt import BoxMaskLoss, box_targets, merge_box_logits, tile_boxes
from steelseg_hpc.models.sam_build import SAM_VARIANTS, build_sam
from steelseg_hpc.models.sam_decoder import (
    expand_mask_decoder,
    make_position_embedding_dtype_safe,
    set_trainable_parts,
)
from steelseg_hpc.models.sam_geometry import boxes_to_sam_frame, sam_logits_to_tiles, tiles_to_sam_input
from steelseg_hpc.models.sam_lora import SamLoRA

PROMPT_MODES = ("none", "box")


class SamSegmenter(nn.Module):
    """A LoRA-adapted SAM producing ``num_classes`` logits per pixel.

    Args:
        num_classes: Number of semantic classes.
        in_channels: 1 (grayscale, repeated to RGB) or 3.
        rank: LoRA rank; 0 fine-tunes the whole image encoder.
        variant: ``"tiny"``, ``"vit_b"``, ``"vit_l"`` or ``"vit_h"``.
        checkpoint: Local SAM checkpoint path, or ``None`` for random weights.
        prompt: ``"none"`` or ``"box"``.
        image_size: SAM input side (multiple of 16); ``None`` is the variant's native size.
        train_mask_decoder: Train the mask decoder.
        train_prompt_encoder: Train the prompt encoder.
        lora_layer: Encoder block indices to adapt; ``None`` adapts all.
        sdpa_attention: Run encoder attention through fused SDPA (same results).
        box_focal_weight: Box mode: weight of the per-box focal loss.
        box_dice_weight: Box mode: weight of the per-box dice loss.
        max_boxes: Box mode, training only: keep at most this many boxes per tile (the
            largest), bounding decoder memory on tiles with many small particles.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        rank: int = 4,
        variant: str = "vit_b",
        checkpoint: str | Path | None = None,
        prompt: str = "none",
        image_size: int | None = None,
        train_mask_decoder: bool = True,
        train_prompt_encoder: bool = False,
        lora_layer: Sequence[int] | None = None,
        sdpa_attention: bool = True,
        box_focal_weight: float = 1.0,
        box_dice_weight: float = 1.0,
        max_boxes: int | None = None,
    ) -> None:
        super().__init__()
        if prompt not in PROMPT_MODES:
            raise ConfigError(f"sam-lora prompt must be one of {PROMPT_MODES}, got {prompt!r}")
        if in_channels not in (1, 3):
            raise ConfigError(f"sam-lora takes 1 (grayscale) or 3 input channels, got {in_channels}")
        if variant not in SAM_VARIANTS:
            raise ConfigError(f"unknown SAM variant {variant!r}; choose one of: {', '.join(SAM_VARIANTS)}")
        self.options = {
            "num_classes": num_classes, "in_channels": in_channels, "rank": rank, "variant": variant,
            "prompt": prompt, "image_size": image_size, "train_mask_decoder": train_mask_decoder,
            "train_prompt_encoder": train_prompt_encoder, "lora_layer": lora_layer,
        }
        self.num_classes = num_classes
        self.prompt = prompt
        self.max_boxes = max_boxes
        sam = build_sam(variant, checkpoint, image_size)
        if prompt == "none":
            expand_mask_decoder(sam.mask_decoder, num_classes)
        make_position_embedding_dtype_safe(sam.prompt_encoder)
        if sdpa_attention:
            use_sdpa_attention(sam.image_encoder)
        self.lora = SamLoRA(sam, rank, lora_layer)
        set_trainable_parts(sam.mask_decoder, sam.prompt_encoder, prompt, train_mask_decoder, train_prompt_encoder)
        self.box_loss = BoxMaskLoss(focal_weight=box_focal_weight, dice_weight=box_dice_weight)

    @property
    def sam(self) -> nn.Module:
        """The wrapped ``segment_anything`` model."""
        return self.lora.sam

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, C, H, W]`` for tiles ``x [B, in_channels, H, W]`` in [0, 1] (none mode).

        Raises:
            ConfigError: In box mode, which needs the ground-truth masks to build its prompts.
        """
        if self.prompt == "box":
            raise ConfigError(
                "sam-lora with prompt='box' needs the ground-truth masks to build box prompts: "
                "call model.loss_and_logits(images, masks, loss_fn) or model.segment_with_boxes(...), "
                "or use prompt='none' for prompt-free inference"
            )
        images, geometry = tiles_to_sam_input(x, self.sam.image_encoder.img_size)
        embeddings = self.lora(images)
        prompt_encoder = self.sam.prompt_encoder
        sparse, dense = self._in_decoder_dtype(*prompt_encoder(points=None, boxes=None, masks=None))
        image_pe = prompt_encoder.get_dense_pe()
        # The package's decoder repeats one image's embedding per prompt set, so decode image by
        # image (the decoder is small next to the encoder).
        low_res = torch.cat([
            self.sam.mask_decoder(embedding[None], image_pe, sparse, dense, multimask_output=True)[0]
            for embedding in embeddings
        ])
        return sam_logits_to_tiles(low_res, geometry)

    def segment_with_boxes(
        self, x: torch.Tensor, boxes: Sequence[torch.Tensor], class_ids: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-box mask logits and the merged semantic logits for given box prompts.

        Args:
            x: Tiles ``[B, in_channels, H, W]`` in [0, 1].
            boxes: Per tile, ``[K_b, 4]`` xyxy pixel-edge boxes, exclusive ends (as ``mask_to_boxes``).
            class_ids: Per tile, ``[K_b]`` class of each box.

        Returns:
            Per tile ``[K_b, H, W]`` box logits, and semantic logits ``[B, C, H, W]``.
        """
        images, geometry = tiles_to_sam_input(x, self.sam.image_encoder.img_size)
        embeddings = self.lora(images)
        image_pe = self.sam.prompt_encoder.get_dense_pe()
        per_box, semantic = [], []
        for embedding, tile_box, tile_class in zip(embeddings, boxes, class_ids):
            tile_box = tile_box.to(device=x.device, dtype=torch.float32)
            if len(tile_box) == 0:
                logits = x.new_zeros((0, *geometry.tile_hw))
            else:
                sparse, dense = self._in_decoder_dtype(*self.sam.prompt_encoder(
                    points=None, boxes=boxes_to_sam_frame(tile_box, geometry), masks=None
                ))
                low_res, _ = self.sam.mask_decoder(embedding[None], image_pe, sparse, dense, multimask_output=False)
                logits = sam_logits_to_tiles(low_res, geometry)[:, 0]
            per_box.append(logits)
            semantic.append(merge_box_logits(logits.detach(), tile_box, tile_class, self.num_classes))
        return per_box, torch.stack(semantic)

    def loss_and_logits(
        self, images: torch.Tensor, masks: torch.Tensor, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training/eval step for the engine: ``(loss, semantic logits [B, C, H, W])``.

        In box mode the loss is this model's per-box loss (``loss_fn``, the engine's dense loss,
        is not used); in none mode it is ``loss_fn(model(images), masks)``.
        """
        if self.prompt == "none":
            logits = self(images)
            return loss_fn(logits, masks), logits
        boxes, class_ids = zip(*(self._prompts_for(mask) for mask in masks))
        box_logits, semantic = self.segment_with_boxes(images, boxes, class_ids)
        targets = [box_targets(mask, b.to(mask.device), c) for mask, b, c in zip(masks, boxes, class_ids)]
        loss = self.box_loss(torch.cat(box_logits), torch.cat(targets).to(images.device))
        return loss, semantic

    def _in_decoder_dtype(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Prompt embeddings in the decoder's dtype: the package builds its empty sparse tensor
        in float32, which would promote a bf16-cast model's tokens and break its Linears."""
        dtype = self.sam.mask_decoder.iou_token.weight.dtype
        return tuple(t.to(dtype) for t in tensors)

    def _prompts_for(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Ground-truth boxes of one tile, the largest ``max_boxes`` of them while training."""
        boxes, class_ids = tile_boxes(mask)
        if self.training and self.max_boxes is not None and len(boxes) > self.max_boxes:
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            keep = areas.argsort(descending=True)[: self.max_boxes]
            boxes, class_ids = boxes[keep], class_ids[keep]
        return boxes, class_ids

    def save_trainable(self, path: str | Path) -> None:
        """Save only the trainable weights (safetensors), with this model's options as metadata."""
        sam_io.save_trainable(self, path, metadata={"sam_lora_options": json.dumps(self.options)})

    def load_trainable(self, path: str | Path) -> dict[str, str]:
        """Load weights written by :meth:`save_trainable` into this (identically built) model."""
        return sam_io.load_trainable(self, path)

    def merge_lora(self) -> int:
        """Fold the LoRA adapters into the qkv weights for inference; returns how many."""
        return sam_io.merge_lora(self)


@register("sam-lora", family="sam", variant="lora", loss="sam", width_option=None,
          checkpoint="trainable", base_option="checkpoint", options_of=SamSegmenter)
def build_sam_lora(in_channels: int = 1, num_classes: int = 3, **options) -> SamSegmenter:
    """SAM with LoRA on q and v of the image encoder's fused qkv (rank 0: full fine-tuning).

    ``build_model("sam-lora", rank=4, variant="vit_b", checkpoint=PATH)``.
    """
    return SamSegmenter(num_classes=num_classes, in_channels=in_channels, **options)
