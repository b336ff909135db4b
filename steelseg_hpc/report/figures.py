"""The report's figures (matplotlib, Agg): training curves, confusion matrices, the class legend.

Each figure is written as a PNG file and returned as bytes, so the HTML page embeds it (it must
open offline, from a file URL) and the Markdown twin links the file.

Example:
    >>> png = legend_png(["ferrite", "pearlite"])  # doctest: +SKIP
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a login node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from steelseg_hpc.core.io import atomic_write_bytes  # noqa: E402
from steelseg_hpc.inference.evaluate import PALETTE  # noqa: E402
from steelseg_hpc.report.collect import RunRecord  # noqa: E402


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def save(png: bytes, path: Path) -> Path:
    atomic_write_bytes(path, png)
    return path


def curves_png(run: RunRecord) -> bytes:
    """Loss, Dice, learning rate and B_simple per epoch of one run (train and validation)."""
    epochs = [row.epoch for row in run.rows]
    figure, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    series = [
        ("loss", [("train", "train_loss"), ("val", "val_loss")]),
        ("Dice", [("train", "train_dice"), ("val", "val_dice")]),
        ("learning rate", [("lr", "lr")]),
        ("B_simple (tiles)", [("B_simple", "noise_scale_b_simple")]),
    ]
    for axis, (title, lines) in zip(axes, series):
        for label, key in lines:
            values = [getattr(row, key) for row in run.rows]
            axis.plot(epochs, [math.nan if v is None else v for v in values], marker="o", markersize=3, label=label)
        axis.set(title=title, xlabel="epoch")
        if len(lines) > 1:
            axis.legend(fontsize=7)
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    figure.suptitle(f"{run.name} ({run.arch})", fontsize=10, y=1.04)
    return _png(figure)


def confusion_png(confusion: list[list[int]], class_names: list[str], title: str) -> bytes:
    """Row-normalised confusion matrix (rows: truth, columns: prediction), counts in the cells."""
    counts = np.asarray(confusion, dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(3.0, 0.6 * len(class_names) + 1.5)
    figure, axis = plt.subplots(figsize=(size + 0.8, size))
    image = axis.imshow(rates, vmin=0, vmax=1, cmap="Blues")
    for (i, j), rate in np.ndenumerate(rates):
        axis.text(j, i, f"{rate:.2f}", ha="center", va="center", fontsize=7,
                  color="white" if rate > 0.6 else "black")
    axis.set(xticks=range(len(class_names)), yticks=range(len(class_names)), xlabel="prediction", ylabel="truth",
             title=title)
    axis.set_xticklabels(class_names, rotation=45, ha="right", fontsize=7)
    axis.set_yticklabels(class_names, fontsize=7)
    figure.colorbar(image, fraction=0.046)
    return _png(figure)


def legend_png(class_names: list[str]) -> bytes:
    """The overlay colours of the classes (``inference.evaluate.PALETTE``)."""
    figure, axis = plt.subplots(figsize=(1.6 * max(len(class_names), 1), 0.5))
    for i, name in enumerate(class_names):
        colour = PALETTE[i % len(PALETTE)] / 255.0
        axis.add_patch(plt.Rectangle((i, 0), 0.3, 1, color=colour, ec="grey"))
        axis.text(i + 0.38, 0.5, name, va="center", fontsize=8)
    axis.set(xlim=(0, len(class_names)), ylim=(0, 1))
    axis.axis("off")
    return _png(figure)
