"""A deterministic synthetic SEM-like steel dataset with the lab's layout.

Three phases with different *textures*, not just different grey levels, so a model has to learn
something: ferrite grains (flat grey cells with dark boundaries), pearlite colonies (lamellae with a
per-colony orientation and period) and bright carbide particles. SEM-like shot noise, blur and a
slow brightness drift make the grey levels of the phases overlap.

Example:
    >>> from steelseg_hpc.data.synth import make_synthetic_dataset
    >>> spec_path = make_synthetic_dataset("raw", groups=(2, 2, 2), size=(96, 96), seed=0)  # doctest: +SKIP
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree

from steelseg_hpc.core.config import dump_toml
from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.core.io import atomic_write_bytes, atomic_write_text

CLASS_NAMES = ("ferrite", "pearlite", "carbide")
# The lab's masks are RGB with channel values in {0, 128, 255}.
CLASS_COLORS = ((0, 128, 255), (255, 128, 0), (255, 255, 255))
LAB_GROUPS = (6, 10, 8)
LAB_COUNTS = ((4, 1, 1), (8, 1, 1), (5, 2, 1))


def _smooth_field(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance noise smoothed over ``scale`` pixels (cheap: built small, zoomed)."""
    h, w = shape
    step = max(scale / 4, 1.0)
    small = rng.standard_normal((int(h / step) + 3, int(w / step) + 3))
    small = ndimage.gaussian_filter(small, sigma=2.0, mode="wrap")
    field = ndimage.zoom(small, step, order=1)[:h, :w]
    return (field - field.mean()) / (field.std() + 1e-8)


def _grains(shape: tuple[int, int], grain_px: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi grains: a grain id per pixel and a boolean map of grain boundaries."""
    h, w = shape
    count = max(int(h * w / grain_px**2), 4)
    seeds = rng.uniform((0, 0), (h, w), size=(count, 2))
    yy, xx = np.mgrid[0:h, 0:w]
    # jitter the query points so boundaries are not ruler-straight
    jitter = 0.15 * grain_px
    points = np.stack([yy + jitter * _smooth_field(shape, grain_px, rng), xx + jitter * _smooth_field(shape, grain_px, rng)], -1)
    _, ids = cKDTree(seeds).query(points.reshape(-1, 2), k=1, workers=1)
    ids = ids.reshape(h, w)
    boundary = np.zeros(shape, dtype=bool)
    boundary[:-1] |= ids[:-1] != ids[1:]
    boundary[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    return ids, ndimage.binary_dilation(boundary, iterations=1 if grain_px < 60 else 2)


def synth_micrograph(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic micrograph (uint8 [H, W]) and its class-index mask (uint8 [H, W])."""
    rng = np.random.default_rng(seed)
    shape = (height, width)
    side = min(height, width)
    grain_px = max(side / 10, 10.0)
    ids, boundary = _grains(shape, grain_px, rng)

    # pearlite colonies: a smooth field thresholded at a per-image fraction, snapped to grains
    fraction = rng.uniform(0.3, 0.55)
    field = _smooth_field(shape, side / 4, rng)
    sizes = np.bincount(ids.ravel(), minlength=ids.max() + 1)
    colony_of_grain = np.bincount(ids.ravel(), weights=field.ravel(), minlength=sizes.size) / np.maximum(sizes, 1)
    threshold = np.quantile(colony_of_grain, 1 - fraction)
    labels = (colony_of_grain[ids] > threshold).astype(np.uint8)

    grain_level = rng.uniform(85, 115, size=ids.max() + 1)
    image = grain_level[ids]
    image = np.where(boundary & (labels == 0), image - 45, image)

    angle = rng.uniform(0, np.pi, size=ids.max() + 1)[ids]
    # periods below ~5 px would be blurred away on small test images
    period = rng.uniform(max(side / 120, 5.0), max(side / 60, 8.0), size=ids.max() + 1)[ids]
    yy, xx = np.mgrid[0:height, 0:width]
    lamellae = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    image = np.where(labels == 1, 105 + 38 * lamellae, image)

    # carbides: bright roundish particles on top of either phase
    # radii scale with the image, so a fixed count gives the same area fraction (~3-6 %) at any size
    n_particles = int(rng.integers(100, 200) * height * width / side**2)
    radius = rng.uniform(max(side / 200, 1.5), max(side / 70, 3.0), size=n_particles)
    centres = rng.uniform((0, 0), (height, width), size=(n_particles, 2))
    particles = np.zeros(shape, dtype=bool)
    for (cy, cx), r in zip(centres, radius):
        y0, y1 = int(max(cy - 2 * r, 0)), int(min(cy + 2 * r + 1, height))
        x0, x1 = int(max(cx - 2 * r, 0)), int(min(cx + 2 * r + 1, width))
        py, px = np.mgrid[y0:y1, x0:x1]
        stretch = rng.uniform(0.6, 1.4)
        particles[y0:y1, x0:x1] |= ((py - cy) / r) ** 2 + ((px - cx) / (r * stretch)) ** 2 <= 1.0
    labels[particles] = 2
    image = np.where(particles, rng.uniform(190, 225), image)

    # SEM look: slight blur, slow brightness drift, shot noise
    image = ndimage.gaussian_filter(image, sigma=0.8)
    image = image + 18 * _smooth_field(shape, side / 2, rng) + np.linspace(-10, 10, width)[None, :]
    image = image + rng.normal(0, 9, size=shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels


def _default_counts(groups: tuple[int, ...]) -> list[tuple[int, int, int]]:
    if tuple(groups) == LAB_GROUPS:
        return list(LAB_COUNTS)
    if min(groups) < 3:
        raise ConfigError(f"--groups: every group needs at least 3 images (train/val/test), got {list(groups)}")
    return [(n - 2, 1, 1) for n in groups]


def make_synthetic_dataset(
    out: str | Path,
    groups: tuple[int, ...] = LAB_GROUPS,
    size: tuple[int, int] = (1660, 1640),
    seed: int = 0,
    tile_size: int | None = None,
    stride: int | None = None,
    copies: int = 1,
    force: bool = False,
) -> Path:
    """Write images, RGB masks and a matching ``spec.toml`` into ``out``; return the spec path.

    Args:
        groups: images per group (the lab: 6, 10, 8).
        size: (width, height) of every image.
        tile_size: defaults to 800, or the image's short side if that is smaller.
        force: write into a non-empty folder that synth did not make (its files of the same
            names are replaced).

    Raises:
        ConfigError: ``out`` is a file, or a non-empty folder synth did not make, without ``force``;
            a tile larger than the images, or negative ``copies``.
    """
    width, height = size
    if width < 16 or height < 16:
        raise ConfigError(f"--size must be at least 16x16, got {width}x{height}")
    counts = _default_counts(groups)
    tile = tile_size or min(800, width, height)
    if not 8 <= tile <= min(width, height):
        raise ConfigError(f"--tile-size {tile}: expected 8 to {min(width, height)}, the images' short side "
                          f"({width}x{height}), or prep could cut no tile")
    if copies < 0:
        raise ConfigError(f"--copies {copies}: expected 0 or more augmented copies per train tile")
    out = Path(out)
    _refuse_foreign_folder(out, force)
    for g, n_images in enumerate(groups, start=1):
        for i in range(n_images):
            image, labels = synth_micrograph(height, width, seed=seed * 1_000_003 + g * 1009 + i)
            rgb = np.asarray(CLASS_COLORS, dtype=np.uint8)[labels]
            for folder, array in (("images", image), ("masks", rgb)):
                encoded = io.BytesIO()
                Image.fromarray(array).save(encoded, format="PNG")
                atomic_write_bytes(out / folder / f"E{g}" / f"E{g}_{i:02d}.png", encoded.getvalue())
    spec = {
        "name": "synthetic-e-type",
        "raw_dir": ".",
        "seed": seed,
        "groups": [{"name": f"E{g}", "images": f"images/E{g}/*.png"} for g in range(1, len(groups) + 1)],
        "mask": {"path": "masks/{group}/{stem}.png"},
        "classes": {
            "encoding": "rgb",
            "classes": [{"name": n, "color": list(c)} for n, c in zip(CLASS_NAMES, CLASS_COLORS)],
        },
        "split": {
            "method": "group-counts",
            "counts": {f"E{g}": {"train": a, "val": b, "test": c} for g, (a, b, c) in enumerate(counts, start=1)},
        },
        "tiling": {"tile_size": tile, "stride": stride or max(tile // 2, 1)},
        "augment": {"copies": copies},
    }
    spec_path = out / "spec.toml"
    atomic_write_text(spec_path, _HEADER + _toml_with_arrays_of_tables(spec))
    return spec_path


_HEADER = "# Written by `steelseg-hpc synth`; describes the synthetic dataset beside it.\n"


class ForeignFolderError(ConfigError):
    """The folder to write holds files synth did not make; ``remedy`` says what to do about it.

    The remedy depends on the command the user typed (``synth`` has ``--force``, ``demo`` does not),
    so a caller that writes through synth re-raises it with its own (:meth:`with_remedy`).
    """

    def __init__(self, folder: Path, remedy: str = "choose a new --out, or pass --force to write into it"):
        super().__init__(f"{folder} is not empty and was not made by synth; its files could be replaced: {remedy}")
        self.folder = folder

    def with_remedy(self, remedy: str) -> "ForeignFolderError":
        return ForeignFolderError(self.folder, remedy)


def _refuse_foreign_folder(out: Path, force: bool) -> None:
    """Never overwrite a user's files: a non-empty folder must be one synth made (its spec.toml)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; expected a new or empty folder")
    if force or not out.is_dir() or not any(out.iterdir()):
        return
    spec = out / "spec.toml"
    try:
        ours = spec.read_text(encoding="utf-8").startswith(_HEADER)
    except (OSError, UnicodeDecodeError):
        ours = False
    if not ours:
        raise ForeignFolderError(out)


def _toml_with_arrays_of_tables(spec: dict) -> str:
    """dump_toml plus [[groups]] and [[classes.classes]] (arrays of tables)."""
    groups = spec.pop("groups")
    classes = spec["classes"].pop("classes")
    text = dump_toml(spec)
    text += "".join(f'\n[[groups]]\nname = "{g["name"]}"\nimages = "{g["images"]}"\n' for g in groups)
    text += "".join(f'\n[[classes.classes]]\nname = "{c["name"]}"\ncolor = {c["color"]}\n' for c in classes)
    return text
