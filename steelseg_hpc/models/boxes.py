"""Box prompts for SAM: one box per connected component of every class, in a single list.

Example:
    >>> import numpy as np
    >>> mask = np.zeros((4, 6), dtype=np.uint8); mask[1:3, 4:6] = 2
    >>> boxes, classes = mask_to_boxes(mask)
    >>> boxes.tolist(), classes.tolist()
    ([[0.0, 0.0, 6.0, 4.0], [4.0, 1.0, 6.0, 3.0]], [0, 2])
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def mask_to_boxes(
    mask: np.ndarray | torch.Tensor, min_area: int = 1, classes: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding boxes of the 8-connected components of each class of a class-index mask.

    Args:
        mask: class indices ``[H, W]``.
        min_area: components with fewer pixels are skipped (speckle makes useless prompts).
        classes: the classes to box; all classes present by default.

    Returns:
        ``boxes`` float32 ``[K, 4]`` as ``(x0, y0, x1, y1)`` in pixels with exclusive ends (a
        component covering column 4 and 5 has x0=4, x1=6), and ``class_ids`` int64 ``[K]``;
        ordered by class, then by component label (row-major first pixel).
    """
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {array.shape}")
    wanted = sorted(np.unique(array).tolist()) if classes is None else classes
    boxes: list[list[float]] = []
    class_ids: list[int] = []
    for cls in wanted:
        labels, count = ndimage.label(array == cls, structure=_EIGHT_CONNECTED)
        if count == 0:
            continue
        areas = np.bincount(labels.ravel(), minlength=count + 1)
        for label, region in enumerate(ndimage.find_objects(labels), start=1):
            if region is None or areas[label] < min_area:
                continue
            rows, cols = region
            boxes.append([cols.start, rows.start, cols.stop, rows.stop])
            class_ids.append(int(cls))
    return (
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(class_ids, dtype=torch.int64),
    )
