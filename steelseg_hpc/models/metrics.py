"""Epoch-level segmentation metrics from one torchmetrics confusion matrix.

Everything (pixel accuracy, Dice, IoU, per class and macro) is derived from a single
``MulticlassConfusionMatrix`` state. torchmetrics sums that state over ranks when ``compute`` is
called under ``torch.distributed``, so every metric is exact over the whole epoch on all ranks,
not an average of per-batch or per-rank ratios.

Classes absent from both the predictions and the targets of the whole epoch have no defined Dice
or IoU (0/0). They are reported as ``None`` per class and left out of the macro averages, so a
validation split that happens to lack a rare class neither gets a free 1.0 nor a penalty 0.0 for
it. ``dice_macro`` and ``miou`` are NaN-free; they are ``None`` only if no class occurs at all.

Example:
    >>> import torch
    >>> metrics = SegmentationMetrics(3, ["matrix", "austenite", "defect"])
    >>> target = torch.tensor([[[0, 1], [1, 1]]])
    >>> metrics.update(target, target)
    >>> result = metrics.compute()
    >>> result["pixel_accuracy"], result["iou_per_class"]
    (1.0, [1.0, 1.0, None])
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
from torchmetrics.classification import MulticlassConfusionMatrix

from steelseg_hpc.core.errors import ConfigError


class SegmentationMetrics(nn.Module):
    """Pixel accuracy, Dice and IoU (per class and macro) and the confusion matrix over an epoch.

    Args:
        num_classes: C.
        class_names: C names, echoed in the result so per-class lists can be labelled.
        ignore_index: a target value to skip (e.g. unlabelled pixels), or None.

    ``update`` takes logits ``[B, C, H, W]`` (argmax over C), a deep-supervision list (the main
    output is used) or integer labels ``[B, H, W]``; ``compute`` returns plain Python numbers.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None,
                 ignore_index: int | None = None) -> None:
        super().__init__()
        names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
        if len(names) != num_classes:
            raise ConfigError(f"metrics: {len(names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = names
        self.confusion = MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index,
                                                   validate_args=False)

    @torch.no_grad()
    def update(self, preds: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> None:
        """Add one batch."""
        if isinstance(preds, (list, tuple)):
            preds = preds[0]
        if preds.is_floating_point():
            preds = preds.argmax(dim=1)
        if preds.shape != target.shape:
            raise ValueError(f"predictions {tuple(preds.shape)} vs targets {tuple(target.shape)}")
        self.confusion.update(preds.reshape(-1), target.reshape(-1))

    def reset(self) -> None:
        """Forget all batches (call at the start of each epoch)."""
        self.confusion.reset()

    def running_state(self) -> dict[str, torch.Tensor]:
        """This rank's unsynchronised counts since the last reset (for a mid-epoch checkpoint)."""
        return {name: value.detach().cpu().clone() for name, value in self.confusion.metric_state.items()}

    def load_running_state(self, state: dict[str, torch.Tensor]) -> None:
        """Continue counting from :meth:`running_state` (after :meth:`reset`)."""
        for name, value in state.items():
            current = getattr(self.confusion, name)
            setattr(self.confusion, name, value.to(device=current.device, dtype=current.dtype))
        # torchmetrics warns about compute() before update() unless it saw an update.
        self.confusion._update_count = max(self.confusion._update_count, 1)
        self.confusion._computed = None

    def compute(self) -> dict[str, Any]:
        """Metrics over every batch since the last reset, summed over all ranks.

        Returns:
            dict with ``pixel_accuracy``, ``dice_macro``, ``dice_per_class``, ``miou``,
            ``iou_per_class``, ``confusion`` (rows = target, columns = prediction, pixel counts)
            and ``class_names``; JSON-serialisable (floats, ints, None).
        """
        confusion = self.confusion.compute().double().cpu()
        true_positive = confusion.diag()
        false_positive = confusion.sum(0) - true_positive
        false_negative = confusion.sum(1) - true_positive
        present = (true_positive + false_positive + false_negative) > 0
        dice = 2 * true_positive / (2 * true_positive + false_positive + false_negative)
        iou = true_positive / (true_positive + false_positive + false_negative)
        total = confusion.sum()
        return {
            "pixel_accuracy": float(true_positive.sum() / total) if total > 0 else None,
            "dice_macro": _macro(dice, present),
            "dice_per_class": _per_class(dice, present),
            "miou": _macro(iou, present),
            "iou_per_class": _per_class(iou, present),
            "confusion": confusion.long().tolist(),
            "class_names": list(self.class_names),
        }


def _per_class(values: torch.Tensor, present: torch.Tensor) -> list[float | None]:
    return [float(v) if p else None for v, p in zip(values.tolist(), present.tolist())]


def _macro(values: torch.Tensor, present: torch.Tensor) -> float | None:
    return float(values[present].mean()) if present.any() else None
