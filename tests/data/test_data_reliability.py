"""Data never silently changes: damaged stores are refused, bit depths kept, user files never overwritten."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from click.testing import CliRunner
from PIL import Image

from steelseg_hpc.cli import main
from steelseg_hpc.compute.writer_lock import WriterLock
from steelseg_hpc.core.errors import DataError
from steelseg_hpc.data import TileDataset, load_spec, open_store, prepare, read_provenance

from .helpers import copy_raw, edit_spec
from tests.mounts import tmpfs


def cli(*args, env=None):
    result = CliRunner().invoke(main, list(map(str, args)), env=env)
    return result.exit_code, result.output


@pytest.fixture
def store_copy(tiny_store, tmp_path):
    copy = tmp_path / "store.zarr"
    shutil.copytree(tiny_store, copy)
    return copy


def test_a_missing_shard_is_refused_naming_the_split_and_tiles(store_copy):
    shard = next((store_copy / "train" / "images" / "c").rglob("*"))
    while shard.is_dir():
        shard = next(shard.iterdir())
    shard.unlink()
    with pytest.raises(DataError, match=r"is damaged: .*train/images/c/0/0/0 \(missing\), which holds tiles 0-\d+ "
                                        r"of split 'train' \(images\)"):
        open_store(store_copy)


def test_deleting_every_val_shard_or_cutting_one_short_is_refused(store_copy, tmp_path):
    truncated = tmp_path / "truncated.zarr"
    shutil.copytree(store_copy, truncated)
    for shard in (store_copy / "val" / "images" / "c").rglob("*"):
        if shard.is_file():
            shard.unlink()
    with pytest.raises(DataError, match=r"split 'val'"):
        open_store(store_copy)
    mask_shard = sorted(p for p in (truncated / "train" / "masks" / "c").rglob("*") if p.is_file())[0]
    mask_shard.write_bytes(mask_shard.read_bytes()[:20])
    with pytest.raises(DataError, match=r"train/masks/c/0/0/0 \(20 bytes, \d+ written \(cut short\?\)\)"):
        open_store(truncated)


def test_a_damaged_shard_read_names_its_file_not_a_codec_traceback(tiny_store, tmp_path):
    store = tmp_path / "store.zarr"
    shutil.copytree(tiny_store, store)
    shard = sorted(p for p in (store / "train" / "masks" / "c").rglob("*") if p.is_file())[0]
    size = shard.stat().st_size
    shard.write_bytes(b"\0" * size)  # same size, garbage: only a read can tell
    dataset = TileDataset(store, "train")
    with pytest.raises(DataError, match=r"tile 0 of split 'train' cannot be read from train/images\|masks/c/0/0/0"):
        dataset[0]


def test_prep_refuses_to_call_a_damaged_store_up_to_date(synthetic_raw, tmp_path):
    spec = copy_raw(synthetic_raw, tmp_path / "raw")
    store = tmp_path / "s.zarr"
    prepare(load_spec(spec), store, workers=0)
    next(p for p in (store / "test" / "whole").rglob("*") if p.is_file() and p.name != "zarr.json").unlink()
    code, output = cli("prep", spec, "--out", store, "--workers", "0")
    assert code == 2 and "is damaged" in output and "whole image" in output
    code, output = cli("prep", spec, "--out", store, "--workers", "0", "--force")
    assert code == 0, output
    open_store(store)


def test_a_second_prep_onto_one_store_is_refused_naming_the_first_and_the_store_is_kept(synthetic_raw, tmp_path):
    spec = copy_raw(synthetic_raw, tmp_path / "raw")
    store = tmp_path / "s.zarr"
    prepare(load_spec(spec), store, workers=0)
    before = {path: path.stat().st_mtime_ns for path in store.rglob("*")}
    # this process holds the store's lock the way a running prep does; the second prep is another process
    with WriterLock(tmp_path / "s.zarr.lock", store, error=DataError):
        result = subprocess.run([sys.executable, "-m", "steelseg_hpc", "prep", str(spec), "--out", str(store),
                                 "--workers", "0", "--force"], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{store} is in use by pid {os.getpid()} on {socket.gethostname()}" in lines[0]
    assert {path: path.stat().st_mtime_ns for path in store.rglob("*")} == before
    assert open_store(store).complete and not (tmp_path / "s.zarr.partial").exists()
    assert not (tmp_path / "s.zarr.lock").exists()  # the holder released it


def _write_16bit_dataset(folder: Path, peak: int) -> Path:
    rng = np.random.default_rng(0)
    for group in ("A", "B"):
        for i in range(3):
            (folder / "images" / group).mkdir(parents=True, exist_ok=True)
            (folder / "masks" / group).mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, peak + 1, size=(64, 80), dtype=np.uint16)
            image[0, 0] = peak
            tifffile.imwrite(folder / "images" / group / f"{group}{i}.tif", image)
            mask = (image > peak // 2).astype(np.uint8)
            Image.fromarray(mask).save(folder / "masks" / group / f"{group}{i}.png")
    spec = folder / "spec.toml"
    spec.write_text('name = "sem16"\nraw_dir = "."\n'
                    '[[groups]]\nname = "A"\nimages = "images/A/*.tif"\n[[groups]]\nname = "B"\nimages = "images/B/*.tif"\n'
                    '[mask]\npath = "masks/{group}/{stem}.png"\n'
                    '[classes]\nencoding = "index"\n[[classes.classes]]\nname = "dark"\n[[classes.classes]]\nname = "bright"\n'
                    '[split]\nmethod = "group-counts"\n[split.counts.A]\ntrain = 1\nval = 1\ntest = 1\n'
                    '[split.counts.B]\ntrain = 1\nval = 1\ntest = 1\n[tiling]\ntile_size = 32\nstride = 32\n')
    return spec


def test_12_bit_data_in_16_bit_tiffs_fill_the_8_bit_range_and_are_recorded(tmp_path):
    spec = _write_16bit_dataset(tmp_path / "raw", peak=4095)
    store = tmp_path / "s.zarr"
    prepare(load_spec(spec), store, workers=0)
    images = zarr.open_group(str(store), mode="r")["train"]["images"][...]
    assert images.max() == 255 and len(np.unique(images)) > 200  # not crushed to 0..15
    assert zarr.open_group(str(store), mode="r").attrs["image_bit_depth"] == 12
    assert {row["source_bit_depth"] for row in read_provenance(store, "train")} == {12}
    # the spec can name the detector's depth; a depth far above the data is refused, not applied
    edit_spec(spec, 'raw_dir = "."', 'raw_dir = "."\nimage_bit_depth = 16')
    code, output = cli("prep", spec, "--out", tmp_path / "t.zarr", "--workers", "0")
    assert code == 2 and "leaves 17 grey levels of" in output and "image_bit_depth" in output
    assert not (tmp_path / "t.zarr").exists() and not (tmp_path / "t.zarr.partial").exists()


def test_synth_never_overwrites_a_folder_it_did_not_make(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "spec.toml").write_text("precious")
    code, output = cli("synth", "--out", mine, "--groups", "3,3,3", "--size", "64x64")
    assert code == 2 and "not empty and was not made by synth" in output
    assert (mine / "spec.toml").read_text() == "precious"
    ours = tmp_path / "ours"
    assert cli("synth", "--out", ours, "--groups", "3,3,3", "--size", "64x64")[0] == 0
    assert cli("synth", "--out", ours, "--groups", "3,3,3", "--size", "64x64")[0] == 0  # its own folder: fine
    assert cli("synth", "--out", mine, "--groups", "3,3,3", "--size", "64x64", "--force")[0] == 0


def test_odd_raw_files_get_one_clear_line(synthetic_raw, tmp_path):
    spec = copy_raw(synthetic_raw, tmp_path / "raw")
    store = tmp_path / "s.zarr"
    image = sorted((spec.parent / "images" / "E1").glob("*.png"))[0]
    weird = image.parent / os.fsdecode(b"E1_\xff.png")
    shutil.copy(image, weird)
    shutil.copy(spec.parent / "masks" / "E1" / image.name, spec.parent / "masks" / "E1" / weird.name)
    code, output = cli("prep", spec, "--out", store, "--workers", "0")
    assert code == 2 and "the file name is not valid UTF-8" in output and len(output.strip().splitlines()) == 1
    weird.unlink()
    edit_spec(spec, 'path = "masks/{group}/{stem}.png"', 'path = "masks/{group}"')
    code, output = cli("prep", spec, "--out", store, "--workers", "0")
    assert code == 2 and "is a folder; mask.path = 'masks/{group}' must name a file" in output


def test_an_unknown_dask_cluster_word_is_one_line(synthetic_raw, tmp_path):
    code, output = cli("prep", synthetic_raw, "--out", tmp_path / "s.zarr", "--dask-cluster", "lcoal")
    assert code == 2 and "--dask-cluster 'lcoal': expected local, slurm or a scheduler address" in output


@pytest.mark.slow
def test_colour_images_are_converted_with_a_warning(synthetic_raw, tmp_path):
    spec = copy_raw(synthetic_raw, tmp_path / "raw")
    image = sorted((spec.parent / "images" / "E2").glob("*.png"))[0]
    grey = np.asarray(Image.open(image))
    Image.fromarray(np.stack([grey, grey // 2, grey], axis=-1)).save(image)
    result = subprocess.run([sys.executable, "-m", "steelseg_hpc", "prep", str(spec), "--out", str(tmp_path / "s.zarr"),
                             "--workers", "0"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "1 image(s) have colour content (e.g. E2/" in result.stderr and "converted to grey" in result.stderr


@pytest.fixture
def read_only_disk(tmp_path):
    with tmpfs(tmp_path / "ro", "size=2m,ro") as mount:
        yield mount


@pytest.mark.slow
def test_prep_onto_a_read_only_disk_is_one_line(synthetic_raw, read_only_disk):
    result = subprocess.run([sys.executable, "-m", "steelseg_hpc", "prep", str(synthetic_raw), "--out",
                             str(read_only_disk / "s.zarr"), "--workers", "0"], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "read-only file system" in lines[0] and "Traceback" not in result.stderr
