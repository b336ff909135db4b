"""Map grayscale tiles to SAM's input frame and SAM's mask logits back to tile pixels exactly.

SAM takes ``[B, 3, S, S]`` images in 0-255 RGB, normalised by its pixel mean/std, resized so
the longest side is ``S`` and zero-padded at the bottom/right (after normalisation, as
``Sam.preprocess`` does). Its mask decoder emits logits at ``S / 4``. The way back mirrors
``Sam.postprocess_masks``: upsample to ``S``, crop the padding, resize to the tile's ``H x W``.

For a tile ``H x W`` and input side ``S``: ``scale = S / max(H, W)``, resized size
``(round(H * scale), round(W * scale))`` (SAM's ``ResizeLongestSide`` rounding). Boxes come in
pixel-edge coordinates with exclusive ends (``mask_to_boxes``); SAM's prompt encoder reads box
corners as pixel indices of the first and last pixel (it adds 0.5 to reach their centres), so
an edge box ``[x0, x1)`` becomes ``(x0 * w / W, (x1 * w / W) - 1)``, likewise in y.

Example:
    >>> geometry = TileGeometry.of((48, 80), sam_size=128)
    >>> geometry.resized_hw
    (77, 128)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# SAM's ImageNet statistics in 0-255 RGB (segment_anything.modeling.Sam defaults).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class TileGeometry:
    """Where a tile of size ``tile_hw`` lands inside SAM's ``sam_size`` square input.

    Attributes:
        tile_hw: The tile's ``(H, W)`` in pixels.
        sam_size: SAM's square input side ``S``.
        resized_hw: ``(h, w)`` of the resized tile inside the input; the rest is padding.
    """

    tile_hw: tuple[int, int]
    sam_size: int
    resized_hw: tuple[int, int]

    @classmethod
    def of(cls, tile_hw: tuple[int, int], sam_size: int) -> "TileGeometry":
        """Compute the geometry of a tile, with SAM's longest-side rounding (``int(v + 0.5)``)."""
        height, width = int(tile_hw[0]), int(tile_hw[1])
        scale = sam_size / max(height, width)
        resized = (int(height * scale + 0.5), int(width * scale + 0.5))
        return cls((height, width), int(sam_size), resized)

    @property
    def box_scale(self) -> tuple[float, float]:
        """Multipliers ``(x, y)`` from tile pixel coordinates to SAM input coordinates."""
        return self.resized_hw[1] / self.tile_hw[1], self.resized_hw[0] / self.tile_hw[0]


def tiles_to_sam_input(tiles: torch.Tensor, sam_size: int) -> tuple[torch.Tensor, TileGeometry]:
    """Turn ``[B, 1 or 3, H, W]`` tiles in [0, 1] into normalised SAM inputs ``[B, 3, S, S]``.

    Args:
        tiles: Float images in [0, 1]; one channel is repeated to RGB.
        sam_size: SAM's input side ``S`` (``image_encoder.img_size``).

    Returns:
        The padded, normalised images and the tile's :class:`TileGeometry`.

    Example:
        >>> images, geometry = tiles_to_sam_input(torch.rand(2, 1, 64, 64), 128)
        >>> tuple(images.shape), geometry.resized_hw
        ((2, 3, 128, 128), (128, 128))
    """
    geometry = TileGeometry.of(tuple(tiles.shape[-2:]), sam_size)
    if tiles.shape[1] == 1:
        tiles = tiles.expand(-1, 3, -1, -1)
    if geometry.resized_hw != geometry.tile_hw:
        shrinking = geometry.resized_hw[0] < geometry.tile_hw[0]
        tiles = F.interpolate(
            tiles, size=geometry.resized_hw, mode="bilinear", align_corners=False, antialias=shrinking
        )
    mean = torch.tensor(PIXEL_MEAN, device=tiles.device, dtype=tiles.dtype).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD, device=tiles.device, dtype=tiles.dtype).view(1, 3, 1, 1)
    images = (tiles * 255.0 - mean) / std
    pad_bottom = sam_size - geometry.resized_hw[0]
    pad_right = sam_size - geometry.resized_hw[1]
    return F.pad(images, (0, pad_right, 0, pad_bottom)), geometry


def sam_logits_to_tiles(logits: torch.Tensor, geometry: TileGeometry) -> torch.Tensor:
    """Map mask logits ``[N, K, S/4, S/4]`` (or any square size) back to ``[N, K, H, W]``.

    Example:
        >>> geometry = TileGeometry.of((48, 80), sam_size=128)
        >>> sam_logits_to_tiles(torch.zeros(1, 3, 32, 32), geometry).shape
        torch.Size([1, 3, 48, 80])
    """
    size = geometry.sam_size
    if logits.shape[-2:] != (size, size):
        logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    logits = logits[..., : geometry.resized_hw[0], : geometry.resized_hw[1]]
    if geometry.resized_hw != geometry.tile_hw:
        logits = F.interpolate(logits, size=geometry.tile_hw, mode="bilinear", align_corners=False)
    return logits


def boxes_to_sam_frame(boxes: torch.Tensor, geometry: TileGeometry) -> torch.Tensor:
    """Turn ``[K, 4]`` xyxy pixel-edge boxes (exclusive ends) of a tile into SAM prompt boxes.

    The edges are scaled into SAM's input frame, then the far corner moves to the last pixel
    inside the box, the first/last-pixel-index convention SAM's prompt encoder expects.

    Example:
        >>> boxes_to_sam_frame(torch.tensor([[0.0, 0.0, 32.0, 16.0]]), TileGeometry.of((32, 32), 128))
        tensor([[  0.,   0., 127.,  63.]])
    """
    scale_x, scale_y = geometry.box_scale
    factors = torch.tensor([scale_x, scale_y, scale_x, scale_y], device=boxes.device, dtype=boxes.dtype)
    last_pixel = torch.tensor([0.0, 0.0, 1.0, 1.0], device=boxes.device, dtype=boxes.dtype)
    return boxes * factors - last_pixel
