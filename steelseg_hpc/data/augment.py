"""Offline augmentation: sample parameters by seed, record them, apply them with albumentations.

Parameters are drawn here (not inside albumentations) so each tile's provenance states exactly
what was done to it, and a rerun reproduces the same tile bit for bit.
"""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from steelseg_hpc.data.spec import AugmentSpec  # noqa: E402

OPS = ("hflip", "vflip", "rot90", "magnify", "intensity", "gamma", "equalize")


def sample_augmentation(spec: AugmentSpec, rng: np.random.Generator) -> dict[str, object]:
    """Draw one augmentation: each op is applied with its probability; at least one op is.

    Returns a JSON-serialisable dict ``{op: parameter}`` of the ops applied, in application order.
    """
    enabled = [op for op in OPS if getattr(spec, op).p > 0]
    if not enabled:
        return {}
    while True:
        params: dict[str, object] = {}
        if rng.random() < spec.hflip.p:
            params["hflip"] = True
        if rng.random() < spec.vflip.p:
            params["vflip"] = True
        if rng.random() < spec.rot90.p:
            params["rot90"] = int(rng.integers(1, 4))
        if rng.random() < spec.magnify.p:
            params["magnify"] = round(float(rng.uniform(*spec.magnify.range)), 4)
        if rng.random() < spec.intensity.p:
            params["intensity"] = {
                "brightness": round(float(rng.uniform(-1, 1) * spec.intensity.brightness), 4),
                "contrast": round(float(rng.uniform(-1, 1) * spec.intensity.contrast), 4),
            }
        if rng.random() < spec.gamma.p:
            params["gamma"] = round(float(rng.uniform(*spec.gamma.range)), 4)
        if rng.random() < spec.equalize.p:
            params["equalize"] = True
        if params:  # an empty draw would duplicate the original tile
            return params


def build_transform(params: dict[str, object]) -> A.Compose:
    """The albumentations pipeline that applies exactly ``params`` (fixed, not random, values)."""
    steps: list[A.BasicTransform] = []
    if params.get("hflip"):
        steps.append(A.HorizontalFlip(p=1.0))
    if params.get("vflip"):
        steps.append(A.VerticalFlip(p=1.0))
    for _ in range(int(params.get("rot90", 0))):
        # transpose then vertical flip = a quarter turn counter-clockwise, exact on pixels
        steps += [A.Transpose(p=1.0), A.VerticalFlip(p=1.0)]
    if "magnify" in params:
        scale = float(params["magnify"])
        steps.append(
            A.Affine(
                scale=(scale, scale),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_REFLECT_101,
                p=1.0,
            )
        )
    if "intensity" in params:
        change = params["intensity"]
        b, c = float(change["brightness"]), float(change["contrast"])
        steps.append(A.RandomBrightnessContrast(brightness_limit=(b, b), contrast_limit=(c, c), p=1.0))
    if "gamma" in params:
        g = float(params["gamma"]) * 100
        steps.append(A.RandomGamma(gamma_limit=(g, g), p=1.0))
    if params.get("equalize"):
        steps.append(A.Equalize(p=1.0))
    return A.Compose(steps)


def apply_augmentation(
    image: np.ndarray, mask: np.ndarray, params: dict[str, object]
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``params`` to a uint8 tile and its mask (same geometry; masks nearest-neighbour)."""
    if not params:
        return image, mask
    out = build_transform(params)(image=image, mask=mask)
    return np.ascontiguousarray(out["image"], dtype=np.uint8), np.ascontiguousarray(out["mask"], dtype=np.uint8)
