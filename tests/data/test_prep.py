import numpy as np
import pytest
import zarr
from PIL import Image

from steelseg_hpc.data import TileDataset, WholeImages, load_spec, open_store, prepare, read_provenance
from steelseg_hpc.data import augment as augment_module
from steelseg_hpc.data.sources import discover
from steelseg_hpc.data.tiling import windows
from steelseg_hpc.core.errors import DataError

from .helpers import copy_raw, edit_spec, snapshot


def test_store_holds_every_window_of_every_image(synthetic_raw, tiny_store):
    loaded = load_spec(synthetic_raw)
    info = open_store(tiny_store)
    assert info.class_names == ["ferrite", "pearlite", "carbide"] and info.num_classes == 3
    records = discover(loaded)
    per_image = len(windows(112, 128, 64, 32))
    for split, copies in (("train", 2), ("val", 1), ("test", 1)):
        n_images = sum(r.split == split for r in records)
        assert info.splits[split] == n_images * per_image * copies
        rows = read_provenance(tiny_store, split)
        assert len(rows) == info.splits[split]
        assert {r["split"] for r in rows} == {split}
    train = read_provenance(tiny_store, "train")
    assert sum(r["augmentation"] == "none" for r in train) == len(train) // 2


def test_original_tiles_are_exact_crops_of_the_raw_image(synthetic_raw, tiny_store):
    raw = synthetic_raw.parent
    rows = read_provenance(tiny_store, "val")
    dataset = TileDataset(tiny_store, "val")
    colours = {(0, 128, 255): 0, (255, 128, 0): 1, (255, 255, 255): 2}
    for row in rows[:: max(len(rows) // 5, 1)]:
        group, stem = row["source"].split("/")
        image = np.asarray(Image.open(raw / "images" / group / f"{stem}.png"))
        rgb = np.asarray(Image.open(raw / "masks" / group / f"{stem}.png"))
        y, x = row["y"], row["x"]
        tile, mask = dataset[row["index"]]
        np.testing.assert_array_equal((tile[0].numpy() * 255).round().astype(np.uint8), image[y : y + 64, x : x + 64])
        expected = np.vectorize(lambda r, g, b: colours[(r, g, b)])(*np.moveaxis(rgb[y : y + 64, x : x + 64], -1, 0))
        np.testing.assert_array_equal(mask.numpy(), expected)


def test_whole_images_are_kept_for_val_and_test(synthetic_raw, tiny_store):
    whole = WholeImages(tiny_store, "test")
    assert len(whole) == 3
    name, image, mask = whole[0]
    group, stem = name.split("/")
    np.testing.assert_array_equal(image, np.asarray(Image.open(synthetic_raw.parent / "images" / group / f"{stem}.png")))
    assert mask.shape == image.shape and mask.max() <= 2
    with pytest.raises(DataError, match="no whole images"):
        WholeImages(tiny_store, "train")


def test_store_attributes_record_spec_and_versions(tiny_store):
    attrs = dict(zarr.open_group(str(tiny_store), mode="r").attrs)
    assert attrs["complete"] is True and len(attrs["spec_hash"]) == 16
    assert {"zarr", "numpy", "albumentations", "python"} <= set(attrs["versions"])
    assert attrs["spec"]["classes"]["encoding"] == "rgb"


def test_rerun_with_unchanged_spec_does_nothing(synthetic_raw, tmp_path):
    spec = copy_raw(synthetic_raw, tmp_path / "raw")
    out = tmp_path / "s.zarr"
    first = prepare(load_spec(spec), out, workers=0)
    before = snapshot(out)
    second = prepare(load_spec(spec), out, workers=0)
    assert first.tiles_written > 0 and second.up_to_date and second.tiles_written == 0
    assert snapshot(out) == before


def test_changed_spec_refuses_unless_forced(synthetic_raw, tmp_path):
    spec = copy_raw(synthetic_raw, tmp_path / "raw")
    out = tmp_path / "s.zarr"
    prepare(load_spec(spec), out, workers=0)
    before = snapshot(out)
    edit_spec(spec, "copies = 1", "copies = 2")
    with pytest.raises(DataError, match="different spec.*--force"):
        prepare(load_spec(spec), out, workers=0)
    assert snapshot(out) == before
    summary = prepare(load_spec(spec), out, workers=0, force=True)
    assert summary.splits["train"].tiles == 3 * 9 * 3
    assert open_store(out).splits["train"] == 81
    assert not out.with_name("s.zarr.partial").exists()


def test_changed_raw_image_counts_as_a_changed_store(synthetic_raw, tmp_path):
    spec = copy_raw(synthetic_raw, tmp_path / "raw")
    out = tmp_path / "s.zarr"
    prepare(load_spec(spec), out, workers=0)
    path = next((spec.parent / "images" / "E1").glob("*.png"))
    image = np.asarray(Image.open(path)).copy()
    image[0, 0] ^= 1
    Image.fromarray(image).save(path)
    with pytest.raises(DataError, match="different spec or different raw data"):
        prepare(load_spec(spec), out, workers=0)


def _files(store) -> dict[str, bytes]:
    return {str(path.relative_to(store)): path.read_bytes() for path in sorted(store.rglob("*")) if path.is_file()}


def test_resume_after_crash_writes_only_missing_shards(synthetic_raw, tmp_path, monkeypatch):
    spec = copy_raw(synthetic_raw, tmp_path / "raw")
    out = tmp_path / "s.zarr"
    calls = {"n": 0}
    real = augment_module.apply_augmentation

    def crash_on_40th(image, mask, params):
        calls["n"] += 1
        if calls["n"] == 40:
            raise RuntimeError("simulated crash")
        return real(image, mask, params)

    monkeypatch.setattr("steelseg_hpc.data.prep.apply_augmentation", crash_on_40th)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare(load_spec(spec), out, workers=0, shard_tiles=SHARD)
    partial = tmp_path / "s.zarr.partial"
    assert partial.exists() and not out.exists()
    with pytest.raises(DataError, match="incomplete"):
        open_store(partial)
    done = {split: zarr.open_array(str(partial), path=f"{split}/done")[...] for split in ("train", "val", "test")}
    finished = {split: np.flatnonzero(flags) for split, flags in done.items()}
    tiles_done = SHARD * sum(len(shards) for shards in finished.values())
    assert 0 < tiles_done < 39  # the shard being written when it crashed is not flagged
    shard_files = {split: {k: partial / split / "images" / "c" / str(k) / "0" / "0" for k in shards}
                   for split, shards in finished.items()}
    written_before = {path: path.stat().st_mtime_ns for files in shard_files.values() for path in files.values()}
    monkeypatch.setattr("steelseg_hpc.data.prep.apply_augmentation", real)
    resumed = prepare(load_spec(spec), out, workers=0, shard_tiles=SHARD)
    total = sum(s.tiles for s in resumed.splits.values())
    assert resumed.tiles_written == total - tiles_done
    for path, mtime in written_before.items():  # the finished shards were not written again
        moved = out / path.relative_to(partial)
        assert moved.stat().st_mtime_ns == mtime, moved
    reference = tmp_path / "ref.zarr"
    prepare(load_spec(spec), reference, workers=0, shard_tiles=SHARD)
    assert _files(out) == _files(reference)


#: Small shards, so every split has several, and shards span images (18 train tiles per image).
SHARD = 8


def test_shards_span_images_and_hold_every_tile(synthetic_raw, tmp_path):
    out = tmp_path / "s.zarr"
    prepare(load_spec(synthetic_raw), out, workers=0, shard_tiles=SHARD)
    rows = read_provenance(out, "train")
    sources_per_shard = [{row["source"] for row in rows[k:k + SHARD]} for k in range(0, len(rows), SHARD)]
    assert any(len(sources) > 1 for sources in sources_per_shard)
    images = zarr.open_array(str(out), path="train/images")
    assert images.shards == (SHARD, 64, 64) and images.chunks == (1, 64, 64)
    assert zarr.open_array(str(out), path="train/done")[...].tolist() == [1] * len(sources_per_shard)
    shard_files = sorted((out / "train" / "images" / "c").glob("*/0/0"))
    assert len(shard_files) == len(sources_per_shard)  # one file per shard, not per tile


@pytest.mark.slow
def test_dask_workers_write_the_same_store_as_one_process(synthetic_raw, tmp_path):
    one_process, dask = tmp_path / "one.zarr", tmp_path / "dask.zarr"
    prepare(load_spec(synthetic_raw), one_process, workers=0, shard_tiles=SHARD)
    prepare(load_spec(synthetic_raw), dask, workers=2, shard_tiles=SHARD)
    for split in ("train", "val", "test"):
        assert read_provenance(dask, split) == read_provenance(one_process, split)
    assert _files(dask) == _files(one_process)  # every chunk, shard and metadata file, bit for bit


def test_store_of_an_older_format_is_refused_with_a_hint(synthetic_raw, tmp_path):
    spec = copy_raw(synthetic_raw, tmp_path / "raw")
    out = tmp_path / "s.zarr"
    prepare(load_spec(spec), out, workers=0)
    zarr.open_group(str(out), mode="r+").attrs["format_version"] = 1
    with pytest.raises(DataError, match="store format 1.*re-run `steelseg-hpc prep SPEC --out .* --force`"):
        open_store(out)
    with pytest.raises(DataError, match="format 1 but this steelseg-hpc writes format 2; re-run prep with --force"):
        prepare(load_spec(spec), out, workers=0)
    assert zarr.open_group(str(out), mode="r").attrs["format_version"] == 1  # untouched
    prepare(load_spec(spec), out, workers=0, force=True)
    assert open_store(out).complete


def test_pooled_random_split_needs_explicit_leak_acknowledgement(synthetic_raw, tmp_path, caplog):
    spec = copy_raw(synthetic_raw, tmp_path / "raw")
    text = spec.read_text()
    start = text.index("[split]")
    end = text.index("[tiling]")
    spec.write_text(text[:start] + '[split]\nmethod = "pooled-random"\n\n' + text[end:])
    from steelseg_hpc.core.errors import ConfigError

    with pytest.raises(ConfigError, match="allow_tile_leakage"):
        load_spec(spec)
    edit_spec(spec, 'method = "pooled-random"', 'method = "pooled-random"\nallow_tile_leakage = true\nval_fraction = 0.25')
    with caplog.at_level("WARNING"):
        prepare(load_spec(spec), tmp_path / "pooled.zarr", workers=0)
    assert "leak" in caplog.text
    info = open_store(tmp_path / "pooled.zarr")
    assert set(info.splits) == {"train", "val"}
    val_sources = {r["source"] for r in read_provenance(tmp_path / "pooled.zarr", "val")}
    train_sources = {r["source"] for r in read_provenance(tmp_path / "pooled.zarr", "train")}
    assert val_sources & train_sources  # the leak the option warns about
