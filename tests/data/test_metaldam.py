"""The real MetalDAM data through data_prep/metaldam.toml: folds, quirks, info band."""
import numpy as np
import pytest
from PIL import Image

from steelseg_hpc.data import TileDataset, load_spec, open_store, read_provenance
from steelseg_hpc.data.sources import discover, load_pair

from ..conftest import METALDAM, REPO

pytestmark = pytest.mark.skipif(not METALDAM.is_dir(), reason=f"MetalDAM not found at {METALDAM}")


def metaldam_spec(**overrides):
    return load_spec(REPO / "data_prep" / "metaldam.toml", raw_dir=METALDAM, overrides=[f"{k}={v}" for k, v in overrides.items()])


def test_fold_split_is_by_image_and_every_image_is_tested_once():
    tested = []
    for fold in range(6):
        records = discover(metaldam_spec(**{"split.fold": fold}))
        by_split = {name: {r.key for r in records if r.split == name} for name in ("train", "val", "test")}
        assert len(by_split["test"]) == 7 and len(by_split["val"]) == 5 and len(by_split["train"]) == 30
        assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
        tested += by_split["test"]
    assert len(tested) == len(set(tested)) == 42


def test_quirky_files_load_cropped_to_their_masks():
    loaded = metaldam_spec()
    records = {r.key.split("/")[1]: r for r in discover(loaded)}
    for stem, shape in (("micrograph26", (703, 1024)), ("micrograph15", (702, 1024)), ("micrograph4", (895, 1280))):
        image, mask = load_pair(records[stem], loaded)
        assert image.shape == mask.shape == shape
        raw = np.asarray(Image.open(records[stem].image_path).convert("L"))
        np.testing.assert_array_equal(image, raw[: shape[0]])
    _, mask = load_pair(records["micrograph0"], loaded)
    assert np.bincount(mask.ravel(), minlength=5).tolist() == [189447, 416128, 23406, 1226, 89665]


def test_prepped_store_has_five_classes_and_no_tile_in_the_info_band(tiny_store_5):
    info = open_store(tiny_store_5)
    assert info.num_classes == 5
    assert info.class_names[3] == "precipitate"
    heights = {}
    for split in ("train", "val", "test"):
        for row in read_provenance(tiny_store_5, split):
            stem = row["source"].split("/")[1]
            if stem not in heights:
                heights[stem] = Image.open(METALDAM / "labels" / f"{stem}.png").size[1]
            assert row["y"] + info.tile_size <= heights[stem]
    dataset = TileDataset(tiny_store_5, "train")
    seen = set()
    for index in range(len(dataset)):
        seen |= set(dataset[index][1].unique().tolist())
    assert seen <= set(range(5)) and len(seen) >= 4
