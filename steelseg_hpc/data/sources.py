"""Raw images and masks: find them, read them, encode masks as class indices, assign splits.

Every failure here is a :class:`~steelseg_hpc.core.errors.DataError` naming the file and what was
expected, because these are the lab's own files and the fix is theirs to make.
"""
from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from steelseg_hpc.data.spec import SPLITS, ClassMap, LoadedSpec
from steelseg_hpc.core.errors import DataError

Image.MAX_IMAGE_PIXELS = None  # SEM images are large but trusted local files


@dataclass(frozen=True)
class ImageRecord:
    """One raw image, its mask, its group and the split it belongs to (None: pooled tiles)."""

    key: str  # "group/stem": unique even when two groups reuse file names
    group: str
    image_path: Path
    mask_path: Path
    split: str | None


def stable_seed(*parts: object) -> int:
    """A seed that depends only on ``parts`` (not on Python's randomised str hash)."""
    return zlib.crc32("\x1f".join(map(str, parts)).encode())


def discover(loaded: LoadedSpec) -> list[ImageRecord]:
    """List every image of the spec's groups with its mask path and split, sorted by key."""
    spec, raw = loaded.spec, loaded.raw_dir
    if not raw.is_dir():
        raise DataError(f"raw folder {raw} does not exist (spec {loaded.path}: raw_dir, or --raw)")
    found: dict[str, tuple[str, Path, Path]] = {}
    owner: dict[Path, str] = {}
    for group in spec.groups:
        paths = sorted(p for p in raw.glob(group.images) if p.is_file())
        if not paths:
            raise DataError(f"group '{group.name}': no files match '{group.images}' in {raw}")
        for path in paths:
            try:
                path.name.encode("utf-8")
            except UnicodeEncodeError:
                raise DataError(f"{ascii(str(path))}: the file name is not valid UTF-8; rename the file "
                                "(store provenance and logs are UTF-8)") from None
            if path in owner:
                raise DataError(f"{path} matches both group '{owner[path]}' and '{group.name}'")
            owner[path] = group.name
            mask = raw / spec.mask.path.format(stem=path.stem, group=group.name, name=path.name)
            found[f"{group.name}/{path.stem}"] = (group.name, path, mask)
    splits = assign_splits(loaded, {key: value[0] for key, value in found.items()})
    return [
        ImageRecord(key, group, image, mask, splits[key])
        for key, (group, image, mask) in sorted(found.items())
        if key in splits
    ]


def assign_splits(loaded: LoadedSpec, groups_by_key: dict[str, str]) -> dict[str, str | None]:
    """Map image key → split name, following ``spec.split``; images left out are absent."""
    spec = loaded.spec
    split = spec.split
    if split.method == "pooled-random":
        return {key: None for key in groups_by_key}
    if split.method == "group-counts":
        result: dict[str, str | None] = {}
        for group in spec.groups:
            keys = sorted(k for k, g in groups_by_key.items() if g == group.name)
            counts = split.counts[group.name]
            wanted = counts.train + counts.val + counts.test
            if wanted > len(keys):
                raise DataError(
                    f"split.counts.{group.name}: train+val+test = {wanted} but group "
                    f"'{group.name}' has {len(keys)} image(s)"
                )
            order = np.random.default_rng(stable_seed(spec.seed, group.name)).permutation(len(keys))
            shuffled = [keys[i] for i in order]
            bounds = np.cumsum([0, counts.train, counts.val, counts.test])
            for name, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:]):
                result.update({key: name for key in shuffled[lo:hi]})
        return result
    if split.method == "lists":
        return _from_lists(split, groups_by_key)
    return _from_folds(loaded, groups_by_key)


def _resolve_name(name: str, groups_by_key: dict[str, str], where: str) -> str:
    if name in groups_by_key:
        return name
    matches = [key for key in groups_by_key if key.split("/", 1)[1] == Path(name).stem]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DataError(f"{where}: image '{name}' is not among the spec's images")
    raise DataError(f"{where}: image '{name}' is ambiguous ({', '.join(matches)}); use group/stem")


def _from_lists(split, groups_by_key: dict[str, str]) -> dict[str, str | None]:
    result: dict[str, str | None] = {}
    for name in SPLITS:
        for entry in getattr(split, name):
            key = _resolve_name(entry, groups_by_key, f"split.{name}")
            if key in result:
                raise DataError(f"split: image '{entry}' is in both '{result[key]}' and '{name}'")
            result[key] = name
    return result


def _from_folds(loaded: LoadedSpec, groups_by_key: dict[str, str]) -> dict[str, str | None]:
    split = loaded.spec.split
    path = loaded.raw_dir / split.folds_file
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise DataError(f"split.folds_file: cannot read {path}: {exc.strerror or exc}") from None
    columns = (split.fold_column, split.split_column, split.image_column)
    if not rows or any(c not in rows[0] for c in columns):
        raise DataError(f"{path}: expected columns {list(columns)}, found {list(rows[0]) if rows else []}")
    chosen = [r for r in rows if r[split.fold_column].strip() == str(split.fold)]
    if not chosen:
        folds = sorted({r[split.fold_column] for r in rows})
        raise DataError(f"{path}: no rows for fold {split.fold}; folds present: {folds}")
    result: dict[str, str | None] = {}
    train: list[str] = []
    for row in chosen:
        key = _resolve_name(row[split.image_column], groups_by_key, str(path))
        role = row[split.split_column].strip().lower()
        if role not in ("train", "val", "test"):
            raise DataError(f"{path}: split value '{role}' for {key}; expected train, val or test")
        if role == "train":
            train.append(key)
        result[key] = role
    if split.val_count:
        if split.val_count >= len(train):
            raise DataError(f"split.val_count = {split.val_count} but fold {split.fold} has {len(train)} train images")
        rng = np.random.default_rng(stable_seed(loaded.spec.seed, "val", split.fold))
        for index in rng.choice(len(train), size=split.val_count, replace=False):
            result[sorted(train)[index]] = "val"
    return result


def read_raw_image(path: Path) -> tuple[np.ndarray, bool]:
    """A micrograph as one grey channel, uint8 or uint16 as stored, and whether it had colour.

    Grey content in an RGB container (MetalDAM's JPEGs) becomes one channel as is; an image whose
    colour channels differ is converted with ITU-R 601 luma weights, and reported as colour.
    """
    array = _read_array(path, what="image")
    colour = False
    if array.ndim == 3:
        channels = array[..., :3] if array.shape[2] >= 3 else array[..., :1]
        colour = channels.shape[2] == 3 and not (np.array_equal(channels[..., 0], channels[..., 1])
                                                 and np.array_equal(channels[..., 0], channels[..., 2]))
        if colour and channels.dtype == np.uint8:
            array = np.asarray(Image.fromarray(np.ascontiguousarray(channels)).convert("L"))
        elif colour:
            weights = np.array([0.299, 0.587, 0.114])
            array = np.rint(channels.astype(np.float64) @ weights).astype(channels.dtype)
        else:
            array = channels[..., 0]
    if array.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: image dtype {array.dtype} not supported (expected 8- or 16-bit integers)")
    return np.ascontiguousarray(array), colour


def data_bit_depth(raw: np.ndarray) -> int:
    """The bits the data use: 8 for 8-bit files; for 16-bit files the fewest that hold the
    largest value, rounded up to an even count (detectors write 10, 12, 14 or 16 bits).

    Example:
        >>> data_bit_depth(np.array([[0, 4095]], dtype=np.uint16)), data_bit_depth(np.array([[3]], np.uint16))
        (12, 8)
    """
    if raw.dtype == np.uint8:
        return 8
    bits = max(8, int(raw.max()).bit_length())
    return bits + bits % 2


def to_uint8(raw: np.ndarray, bit_depth: int, path: Path) -> np.ndarray:
    """Scale ``raw`` from ``bit_depth`` bits to 0..255 (12-bit data in a 16-bit file fill 0..255).

    Raises:
        DataError: values above ``bit_depth`` bits, or a scaling that would leave only a handful
            of grey levels of an image that has many (a bit depth far too high for the data).
    """
    if raw.dtype == np.uint8:
        return raw
    top = (1 << bit_depth) - 1
    if int(raw.max()) > top:
        raise DataError(f"{path}: values up to {int(raw.max())} do not fit image_bit_depth = {bit_depth}")
    scaled = ((raw.astype(np.uint32) * 255 + top // 2) // top).astype(np.uint8)
    levels_in, levels_out = len(np.unique(raw)), len(np.unique(scaled))
    if levels_in > 256 and levels_out < 32:
        raise DataError(f"{path}: scaling {bit_depth}-bit data to 8 bits leaves {levels_out} grey levels of "
                        f"{levels_in} (largest value {int(raw.max())}); set image_bit_depth in the spec to the "
                        "detector's real bit depth")
    return scaled


def read_mask(path: Path, class_map: ClassMap) -> np.ndarray:
    """Read a mask and encode it as uint8 class indices [H, W].

    Raises:
        DataError: naming the file and every value outside the class map with its pixel count.
    """
    array = _read_array(path, what="mask")
    codes = class_map.codes()
    if class_map.encoding == "rgb":
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=2)
        rgb = array[..., :3].astype(np.uint32)
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        lookup = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(codes)}
        describe = lambda v: f"({v >> 16},{(v >> 8) & 255},{v & 255})"  # noqa: E731
    else:
        if array.ndim == 3:
            if not all(np.array_equal(array[..., 0], array[..., c]) for c in range(1, min(3, array.shape[2]))):
                raise DataError(f"{path}: index mask has {array.shape[2]} channels that differ; expected one channel")
            array = array[..., 0]
        packed = array.astype(np.int64)
        lookup = {value: i for i, value in enumerate(codes)}
        describe = str
    # compare against each class code rather than np.unique over every pixel: ~10x faster
    encoded = np.zeros(packed.shape, dtype=np.uint8)
    matched = np.zeros(packed.shape, dtype=bool)
    for code, index in lookup.items():
        hit = packed == code
        encoded[hit] = index
        matched |= hit
    if not matched.all():
        values, counts = np.unique(packed[~matched], return_counts=True)
        shown = ", ".join(f"{describe(v)}: {c} px" for v, c in zip(values.tolist()[:8], counts.tolist()[:8]))
        more = f" and {len(values) - 8} more" if len(values) > 8 else ""
        expected = ", ".join(describe(v) for v in lookup)
        raise DataError(f"{path}: mask values outside the class map: {shown}{more} (expected {expected})")
    return encoded


def load_raw_pair(record: ImageRecord, loaded: LoadedSpec) -> tuple[np.ndarray, np.ndarray, bool]:
    """The raw image (uint8 or uint16), its mask as class indices, and whether the image had
    colour; the info band cropped if the spec says so, sizes checked."""
    if record.mask_path.is_dir():
        raise DataError(f"{record.image_path}: its mask path {record.mask_path} is a folder; mask.path = "
                        f"'{loaded.spec.mask.path}' must name a file, e.g. 'masks/{{group}}/{{stem}}.png'")
    if not record.mask_path.is_file():
        raise DataError(f"{record.image_path}: mask not found, expected {record.mask_path}")
    image, colour = read_raw_image(record.image_path)
    mask = read_mask(record.mask_path, loaded.spec.classes)
    if image.shape != mask.shape:
        mh, mw = mask.shape
        ih, iw = image.shape
        if loaded.spec.mask.crop_image_to_mask and iw == mw and mh < ih:
            image = image[:mh]
        else:
            hint = "" if loaded.spec.mask.crop_image_to_mask else " (set mask.crop_image_to_mask for an info band)"
            raise DataError(
                f"{record.image_path}: image is {iw}x{ih} but mask {record.mask_path.name} is {mw}x{mh}{hint}"
            )
    return np.ascontiguousarray(image), mask, colour


def load_pair(record: ImageRecord, loaded: LoadedSpec) -> tuple[np.ndarray, np.ndarray]:
    """An image as uint8 (16-bit data scaled by the dataset's bit depth) and its mask."""
    raw, mask, _ = load_raw_pair(record, loaded)
    return to_uint8(raw, loaded.image_bit_depth or data_bit_depth(raw), record.image_path), mask


def _read_array(path: Path, what: str) -> np.ndarray:
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        with Image.open(path) as handle:
            handle.load()  # decode now, so a truncated file fails here and not later
            if handle.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(handle).astype(np.uint16)
            if handle.mode == "P":
                return np.asarray(handle)  # palette indices are the values
            if handle.mode not in ("L", "RGB", "RGBA", "LA"):
                return np.asarray(handle.convert("RGB"))
            return np.asarray(handle)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read {what} ({exc})") from None
