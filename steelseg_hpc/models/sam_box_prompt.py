"""Box prompts from ground-truth masks, per-box targets, per-box loss and the semantic merge.

The lab's box mode: every connected component of every class gives one xyxy box (all boxes of
a tile in one list), SAM predicts one binary mask per box, the loss compares each prediction
with that box's ground truth, and for metrics the per-box logits are merged into a semantic map
``[C, H, W]``. Metrics computed this way use ground-truth boxes and must be labelled so.

A box's ground truth is the pixels of its class inside the box (equal to the component itself
unless another component of the same class reaches into the box).

Example:
    >>> mask = torch.zeros(8, 8, dtype=torch.long); mask[2:4, 2:6] = 1
    >>> boxes, class_ids = tile_boxes(mask)
    >>> boxes.tolist(), class_ids.tolist()
    ([[0.0, 0.0, 8.0, 8.0], [2.0, 2.0, 6.0, 4.0]], [0, 1])
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from steelseg_hpc.models.boxes import mask_to_boxes

# Score of a class at pixels that no box of that class covers: far below any real logit but
# finite, so softmax and bf16 stay well defined.
NO_BOX_LOGIT = -1.0e4


def tile_boxes(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes ``[K, 4]`` (xyxy pixel edges, exclusive ends) and class ids ``[K]`` of one mask.

    The 8-connected components of every class present, in one list (:func:`mask_to_boxes`).
    """
    boxes, class_ids = mask_to_boxes(mask)
    return boxes.to(torch.float32).reshape(-1, 4), class_ids.to(torch.int64).reshape(-1)


def box_regions(boxes: torch.Tensor, tile_hw: tuple[int, int]) -> torch.Tensor:
    """Boolean ``[K, H, W]``: the pixels inside each xyxy box (pixel ``i`` spans ``[i, i + 1)``)."""
    rows = torch.arange(tile_hw[0], device=boxes.device, dtype=boxes.dtype)
    cols = torch.arange(tile_hw[1], device=boxes.device, dtype=boxes.dtype)
    inside_rows = (rows[None] >= boxes[:, 1:2]) & (rows[None] < boxes[:, 3:4])  # [K, H]
    inside_cols = (cols[None] >= boxes[:, 0:1]) & (cols[None] < boxes[:, 2:3])  # [K, W]
    return inside_rows[:, :, None] & inside_cols[:, None, :]


def box_targets(mask: torch.Tensor, boxes: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
    """Binary targets ``[K, H, W]`` (float): the box's class pixels inside the box.

    Example:
        >>> mask = torch.tensor([[0, 1], [1, 1]])
        >>> box_targets(mask, torch.tensor([[1.0, 0.0, 2.0, 2.0]]), torch.tensor([1])).tolist()
        [[[0.0, 1.0], [0.0, 1.0]]]
    """
    regions = box_regions(boxes.to(torch.float32), tuple(mask.shape[-2:]))
    same_class = mask[None] == class_ids.to(mask.device)[:, None, None]
    return (same_class & regions).float()


def merge_box_logits(
    box_logits: torch.Tensor, boxes: torch.Tensor, class_ids: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Semantic logits ``[C, H, W]`` from per-box logits ``[K, H, W]``.

    A class scores, at each pixel, the highest logit among its boxes that contain the pixel,
    and :data:`NO_BOX_LOGIT` where none does; argmax then gives the semantic map.
    """
    height, width = box_logits.shape[-2:]
    inside = box_regions(boxes.to(torch.float32), (height, width))
    floor = box_logits.new_full((), NO_BOX_LOGIT)
    scores = torch.where(inside, box_logits, floor)  # [K, H, W]
    merged = box_logits.new_full((num_classes, height * width), NO_BOX_LOGIT)
    index = class_ids.to(box_logits.device)[:, None].expand(-1, height * width)
    merged = merged.scatter_reduce(0, index, scores.reshape(len(scores), -1), reduce="amax")
    return merged.view(num_classes, height, width)


class BoxMaskLoss(nn.Module):
    """Per-box binary loss: ``focal_weight * focal + dice_weight * soft dice``, averaged over boxes.

    SAM itself was trained with focal and dice on binary masks; the weights are options.

    Args:
        focal_weight: Weight of the sigmoid focal loss (mean over pixels).
        dice_weight: Weight of ``1 - soft dice`` (per box, then mean).
        focal_gamma: Focusing exponent of the focal loss.

    Example:
        >>> loss = BoxMaskLoss()
        >>> target = torch.zeros(2, 4, 4); target[:, :2] = 1
        >>> bool(loss(20 * (2 * target - 1), target) < loss(torch.zeros(2, 4, 4), target))
        True
    """

    def __init__(self, focal_weight: float = 1.0, dice_weight: float = 1.0, focal_gamma: float = 2.0) -> None:
        super().__init__()
        self.focal_weight = focal_weight
        self.dice_weight = dice_weight
        self.focal_gamma = focal_gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, targets = logits.float().flatten(1), targets.float().flatten(1)
        probabilities = torch.sigmoid(logits)
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_true = probabilities * targets + (1 - probabilities) * (1 - targets)
        focal = ((1 - p_true) ** self.focal_gamma * bce).mean()
        overlap = (probabilities * targets).sum(1)
        dice = (2 * overlap + 1.0) / (probabilities.sum(1) + targets.sum(1) + 1.0)
        return self.focal_weight * focal + self.dice_weight * (1 - dice).mean()
