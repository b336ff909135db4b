"""Dataset specs: the TOML files in ``data_prep/`` that say where images are and how to tile them.

A spec is data, not code (nnU-Net's "plans as data"): it names the raw folder, how an image finds
its mask, the groups, the split, the class map, the crop, the tiling and the augmentations.

Example:
    >>> from steelseg_hpc.data.spec import load_spec
    >>> spec = load_spec("data_prep/metaldam.toml")  # doctest: +SKIP
    >>> spec.classes.names  # doctest: +SKIP
    ['matrix', 'austenite', 'martensite-austenite', 'precipitate', 'defect']
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from steelseg_hpc.core.config import StrictModel, load_toml
from steelseg_hpc.core.shipped import FOLDERS, find_named_or_path

SPLITS = ("train", "val", "test")


class GroupSpec(StrictModel):
    """One group of images (e.g. one steel grade), found by a glob relative to the raw folder."""

    name: str = Field(min_length=1)
    images: str = Field(min_length=1, description="glob, e.g. 'images/group1/*.png'")


class ClassSpec(StrictModel):
    """One class: its name and how it is written in the mask file."""

    name: str = Field(min_length=1)
    color: tuple[int, int, int] | None = Field(None, description="RGB colour in 'rgb' masks")
    value: int | None = Field(None, ge=0, le=255, description="pixel value in 'index' masks")

    @field_validator("color")
    @classmethod
    def _color_in_range(cls, color):
        if color is not None and not all(0 <= c <= 255 for c in color):
            raise ValueError(f"colour channels must be in 0..255, got {list(color)}")
        return color


class ClassMap(StrictModel):
    """Mask encoding and the ordered classes; class index = position in ``classes``."""

    encoding: Literal["rgb", "index"]
    classes: list[ClassSpec] = Field(min_length=2)

    @model_validator(mode="after")
    def _consistent(self):
        key = "color" if self.encoding == "rgb" else "value"
        codes = []
        for position, cls in enumerate(self.classes):
            code = getattr(cls, key)
            if code is None:
                if self.encoding == "index":
                    code = position  # an index mask's value defaults to the class position
                else:
                    raise ValueError(f"class '{cls.name}' needs a 'color' for rgb masks")
            codes.append(tuple(code) if isinstance(code, (list, tuple)) else code)
        if len(set(codes)) != len(codes):
            raise ValueError(f"two classes share the same mask {key}")
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError("class names must be unique")
        return self

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def codes(self) -> list:
        """The mask code of each class, in class-index order (colour tuple or pixel value)."""
        if self.encoding == "rgb":
            return [tuple(c.color) for c in self.classes]
        return [c.value if c.value is not None else i for i, c in enumerate(self.classes)]


class MaskSpec(StrictModel):
    """How an image finds its mask, and whether the image carries an unlabelled info band."""

    path: str = Field(
        min_length=1,
        description="template relative to the raw folder; {stem}, {group} and {name} are filled in",
    )
    crop_image_to_mask: bool = Field(
        False, description="image taller than its mask: keep image[:mask_height] (SEM info band)"
    )


class GroupCounts(StrictModel):
    train: int = Field(ge=0)
    val: int = Field(ge=0)
    test: int = Field(ge=0)


class SplitSpec(StrictModel):
    """How images are assigned to train/val/test. Always by image, unless ``pooled-random``.

    - ``group-counts``: per group, shuffle images (by seed) and take the counts.
    - ``lists``: explicit image stems per split.
    - ``folds``: a CSV of folds (columns ``fold_column``, ``split_column``, ``image_column``);
      the chosen fold's test images are the test split, and ``val_count`` images carved from its
      train images (by seed) are the val split.
    - ``pooled-random``: the lab's old behaviour, all tiles pooled and split at random. It leaks
      neighbouring (overlapping) tiles between train and val, so it needs ``allow_tile_leakage``.
    """

    method: Literal["group-counts", "lists", "folds", "pooled-random"]
    counts: dict[str, GroupCounts] | None = None
    train: list[str] | None = None
    val: list[str] | None = None
    test: list[str] | None = None
    folds_file: str | None = None
    fold: int | None = None
    fold_column: str = "fold_id"
    split_column: str = "split"
    image_column: str = "image"
    val_count: int = Field(0, ge=0)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    allow_tile_leakage: bool = False

    @model_validator(mode="after")
    def _fields_for_method(self):
        needs = {
            "group-counts": ["counts"],
            "lists": ["train", "val", "test"],
            "folds": ["folds_file", "fold"],
            "pooled-random": [],
        }[self.method]
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise ValueError(f"split method '{self.method}' needs: {', '.join(missing)}")
        if self.method == "pooled-random" and not self.allow_tile_leakage:
            raise ValueError(
                "split method 'pooled-random' leaks overlapping tiles of one image into both "
                "train and val; set allow_tile_leakage = true to accept that"
            )
        return self


class TilingSpec(StrictModel):
    tile_size: int = Field(800, ge=8)
    stride: int = Field(400, gt=0, description="step between windows; the last window is flush")

    @model_validator(mode="after")
    def _stride_covers(self):
        if self.stride > self.tile_size:
            raise ValueError(
                f"stride {self.stride} > tile_size {self.tile_size} would leave pixels uncovered; "
                "use stride <= tile_size"
            )
        return self


class FlipSpec(StrictModel):
    p: float = Field(0.5, ge=0, le=1)


class RangeSpec(StrictModel):
    p: float = Field(0.5, ge=0, le=1)
    range: tuple[float, float]

    @model_validator(mode="after")
    def _ordered(self):
        if self.range[0] > self.range[1]:
            raise ValueError(f"range must be [low, high], got {list(self.range)}")
        return self


class IntensitySpec(StrictModel):
    p: float = Field(0.5, ge=0, le=1)
    brightness: float = Field(0.2, ge=0, le=1)
    contrast: float = Field(0.2, ge=0, le=1)


class AugmentSpec(StrictModel):
    """Offline augmentation: ``copies`` augmented versions of every tile of the listed splits."""

    copies: int = Field(0, ge=0)
    splits: list[Literal["train", "val", "test"]] = ["train"]
    hflip: FlipSpec = FlipSpec()
    vflip: FlipSpec = FlipSpec()
    rot90: FlipSpec = FlipSpec()
    magnify: RangeSpec = RangeSpec(range=(1.0, 2.5))
    intensity: IntensitySpec = IntensitySpec()
    gamma: RangeSpec = RangeSpec(range=(0.7, 1.5))
    equalize: FlipSpec = FlipSpec(p=0.2)

    @field_validator("magnify", "gamma")
    @classmethod
    def _positive_range(cls, value: RangeSpec, info):
        if value.range[0] <= 0:
            raise ValueError(f"{info.field_name} range must be > 0 (1.0 = unchanged)")
        return value


class DatasetSpec(StrictModel):
    """A whole dataset spec (one TOML file)."""

    name: str = Field(min_length=1)
    raw_dir: str = Field(description="folder of raw images, relative to the spec file")
    seed: int = 0
    groups: list[GroupSpec] = Field(min_length=1)
    mask: MaskSpec
    classes: ClassMap
    split: SplitSpec
    tiling: TilingSpec = TilingSpec()
    augment: AugmentSpec = AugmentSpec()
    whole_image_splits: list[Literal["train", "val", "test"]] = ["val", "test"]
    image_bit_depth: int | None = Field(
        None, ge=8, le=16, description="bits a 16-bit image's data use (12 for a 12-bit detector); "
        "default: the most any image of the dataset uses")

    @model_validator(mode="after")
    def _group_names(self):
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise ValueError("group names must be unique")
        if self.split.counts is not None:
            unknown = sorted(set(self.split.counts) - set(names))
            if unknown:
                raise ValueError(f"split.counts names unknown group(s) {unknown}; groups are {names}")
            absent = sorted(set(names) - set(self.split.counts))
            if absent:
                raise ValueError(f"split.counts has no entry for group(s) {absent}")
        return self

    def fingerprint(self) -> str:
        """A short hash of everything that changes the store's content."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec, the file it came from and the raw folder its relative paths start from."""

    spec: DatasetSpec
    path: Path
    raw_dir: Path
    #: The bit depth 16-bit images are scaled from (the spec's, or the most any image uses).
    image_bit_depth: int | None = None


def load_spec(
    path: str | Path,
    raw_dir: str | Path | None = None,
    tile_size: int | None = None,
    stride: int | None = None,
    overrides: list[str] | None = None,
) -> LoadedSpec:
    """Load and validate a dataset spec (a path, or a name: ``metaldam``); CLI flags override its tiling and raw folder.

    A shipped spec reads as if it were the project's ``./data_prep/NAME.toml``: its relative
    ``raw_dir`` starts from there, not from inside the installed package.
    """
    found = find_named_or_path("dataset", path)
    path = found.path
    anchor = Path.cwd() / FOLDERS["dataset"] if found.shipped else path.parent
    extra = list(overrides or [])
    if tile_size is not None:
        extra.append(f"tiling.tile_size={tile_size}")
    if stride is not None:
        extra.append(f"tiling.stride={stride}")
    spec = load_toml(path, DatasetSpec, extra)
    root = Path(raw_dir) if raw_dir is not None else (anchor / spec.raw_dir)
    return LoadedSpec(spec, path, root.resolve())
