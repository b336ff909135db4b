import pytest

from steelseg_hpc.core.config import apply_overrides
from steelseg_hpc.data.sources import discover, read_mask
from steelseg_hpc.data.spec import ClassMap, load_spec
from steelseg_hpc.core.errors import ConfigError, DataError

from ..conftest import REPO
from .helpers import copy_raw, edit_spec


def test_shipped_specs_validate():
    lab = load_spec(REPO / "data_prep" / "e-type.toml")
    assert lab.spec.classes.names == ["ferrite", "pearlite", "carbide"]
    counts = lab.spec.split.counts
    assert [(c.train, c.val, c.test) for c in counts.values()] == [(4, 1, 1), (8, 1, 1), (5, 2, 1)]
    assert lab.spec.tiling.tile_size == 800
    assert load_spec(REPO / "data_prep" / "metaldam.toml").spec.classes.encoding == "index"


def test_group_counts_split_is_by_image_and_seeded(synthetic_raw, tmp_path):
    records = discover(load_spec(synthetic_raw))
    assert sorted(r.split for r in records) == sorted(["train", "val", "test"] * 3)
    assert discover(load_spec(synthetic_raw)) == records
    spec = copy_raw(synthetic_raw, tmp_path / "raw")
    edit_spec(spec, "seed = 0", "seed = 5")
    assert [r.split for r in discover(load_spec(spec))] != [r.split for r in records]


def test_list_split_and_unknown_names(synthetic_raw, tmp_path):
    spec = copy_raw(synthetic_raw, tmp_path / "raw")
    text = spec.read_text()
    head, tail = text[: text.index("[split]")], text[text.index("[tiling]") :]
    spec.write_text(head + '[split]\nmethod = "lists"\ntrain = ["E1_00", "E2/E2_00"]\nval = ["E1_01"]\ntest = ["E3_02"]\n\n' + tail)
    records = discover(load_spec(spec))
    assert {r.key: r.split for r in records} == {"E1/E1_00": "train", "E2/E2_00": "train", "E1/E1_01": "val", "E3/E3_02": "test"}
    edit_spec(spec, 'test = ["E3_02"]', 'test = ["E9_99"]')
    with pytest.raises(DataError, match="split.test: image 'E9_99' is not among"):
        discover(load_spec(spec))


def test_index_masks_and_rgb_masks_with_equal_channels(tmp_path):
    from PIL import Image
    import numpy as np

    classes = ClassMap(encoding="index", classes=[{"name": "a"}, {"name": "b", "value": 7}])
    arr = np.array([[0, 7], [7, 0]], dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png", classes).tolist() == [[0, 1], [1, 0]]
    Image.fromarray(np.stack([arr] * 3, -1)).save(tmp_path / "rgb.png")
    assert read_mask(tmp_path / "rgb.png", classes).tolist() == [[0, 1], [1, 0]]
    arr[0, 0] = 3
    Image.fromarray(arr).save(tmp_path / "bad.png")
    with pytest.raises(DataError, match=r"bad.png: mask values outside the class map: 3: 1 px \(expected 0, 7\)"):
        read_mask(tmp_path / "bad.png", classes)


def test_class_map_needs_distinct_codes():
    with pytest.raises(ValueError, match="share the same mask color"):
        ClassMap(encoding="rgb", classes=[{"name": "a", "color": [0, 0, 0]}, {"name": "b", "color": [0, 0, 0]}])


def test_overrides_reach_nested_fields_and_typos_fail(synthetic_raw):
    assert load_spec(synthetic_raw, overrides=["augment.copies=3"]).spec.augment.copies == 3
    with pytest.raises(ConfigError, match="augment.copiez"):
        load_spec(synthetic_raw, overrides=["augment.copiez=3"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["novalue"])
