"""Every kind of bad input: one line naming the file or field, exit code 2, store untouched.

In this process and through real Dask workers (a real ``prep`` process, all its output read).
"""
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from steelseg_hpc.cli import main
from steelseg_hpc.data import load_spec, prepare

from .helpers import copy_raw, edit_spec, snapshot


@pytest.fixture
def raw_and_store(synthetic_raw, tmp_path):
    spec = copy_raw(synthetic_raw, tmp_path / "raw")
    store = tmp_path / "store.zarr"
    prepare(load_spec(spec), store, workers=0)
    return spec, store


def first_image(spec, group="E2"):
    return sorted((spec.parent / "images" / group).glob("*.png"))[0]


def mask_of(image):
    return image.parents[2] / "masks" / image.parent.name / image.name


def remove_mask(spec):
    mask_of(first_image(spec)).unlink()
    return "mask not found"


def shrink_mask(spec):
    path = mask_of(first_image(spec))
    Image.open(path).crop((0, 0, 100, 100)).save(path)
    return "image is 128x112 but mask"


def paint_unknown_colour(spec):
    path = mask_of(first_image(spec))
    rgb = np.asarray(Image.open(path)).copy()
    rgb[:3, :4] = (10, 20, 30)
    Image.fromarray(rgb).save(path)
    return r"\(10,20,30\): 12 px"


def truncate_image(spec):
    path = first_image(spec)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "cannot read image"


def write_garbage_mask(spec):
    mask_of(first_image(spec)).write_bytes(b"not a png at all")
    return "cannot read mask"


def too_many_in_split(spec):
    edit_spec(spec, "[split.counts.E1]\ntrain = 1", "[split.counts.E1]\ntrain = 5")
    return "split.counts.E1: train\\+val\\+test = 7 but group 'E1' has 3"


def toml_syntax(spec):
    edit_spec(spec, 'name = "synthetic-e-type"', 'name = "synthetic-e-type')
    return "TOML syntax error"


def unknown_key(spec):
    edit_spec(spec, "tile_size = 64", "tile_size = 64\ntile_sise = 32")
    return "field 'tiling.tile_sise': unknown key"


def zero_stride(spec):
    edit_spec(spec, "stride = 32", "stride = 0")
    return "field 'tiling.stride'"


def negative_stride(spec):
    edit_spec(spec, "stride = 32", "stride = -4")
    return "field 'tiling.stride'"


def non_rgb_class_colour(spec):
    edit_spec(spec, "color = [255, 255, 255]", "color = [255, 255, 256]")
    return "classes.classes.2.color"


CASES = [
    remove_mask,
    shrink_mask,
    paint_unknown_colour,
    truncate_image,
    write_garbage_mask,
    too_many_in_split,
    toml_syntax,
    unknown_key,
    zero_stride,
    negative_stride,
    non_rgb_class_colour,
]


def run_cli(*args):
    result = CliRunner().invoke(main, list(map(str, args)))
    return result.exit_code, result.stderr, result.stdout


def run_prep_process(*args) -> tuple[int, str]:
    """``python -m steelseg_hpc prep ARGS`` in a real process: (exit code, stdout + stderr).

    A real process, so whatever Dask's scheduler, nannies and worker processes print is captured.
    """
    proc = subprocess.run([sys.executable, "-m", "steelseg_hpc", "prep", *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def assert_one_clean_line(code: int, output: str, expected: str) -> None:
    lines = output.strip().splitlines()
    assert code == 2, output
    assert len(lines) == 1, output
    for noise in ("Traceback", "distributed.", "ERROR -"):
        assert noise not in output, output
    assert re.search(expected, lines[0]), lines[0]


def assert_untouched(store, before) -> None:
    assert snapshot(store) == before
    assert not store.with_name(store.name + ".partial").exists()


@pytest.mark.parametrize("damage", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_is_one_line_exit_2_and_store_untouched(raw_and_store, damage):
    spec, store = raw_and_store
    expected = damage(spec)
    before = snapshot(store)
    for extra in ([], ["--force"]):
        code, err, out = run_cli("prep", spec, "--out", store, "--workers", "0", *extra)
        assert_one_clean_line(code, err + out, expected)
    assert_untouched(store, before)


# One prep per damage kind, with --force (the stricter case): each costs a Dask start-up (~4-7 s
# on 2 cores) when the damage is found on a worker; spec errors stop before any worker starts.
@pytest.mark.slow
@pytest.mark.parametrize("damage", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_through_dask_workers_prints_only_the_error(raw_and_store, damage):
    spec, store = raw_and_store
    expected = damage(spec)
    before = snapshot(store)
    code, output = run_prep_process(spec, "--out", store, "--workers", "2", "--force")
    assert_one_clean_line(code, output, expected)
    assert_untouched(store, before)


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)], ids=["in-process", "dask"])
def test_image_smaller_than_tile(raw_and_store, workers):
    spec, store = raw_and_store
    before = snapshot(store)
    code, output = run_prep_process(spec, "--out", store, "--workers", workers, "--tile-size", "120",
                                    "--stride", "60", "--force")
    assert_one_clean_line(code, output, r"128x112 px \(after cropping\), smaller than a 120 px tile")
    assert_untouched(store, before)


def test_stride_larger_than_tile_is_refused(raw_and_store):
    spec, store = raw_and_store
    code, err, _ = run_cli("prep", spec, "--out", store, "--workers", "0", "--stride", "65")
    assert code == 2 and "uncovered" in err


def test_missing_spec_and_non_store_output(raw_and_store, tmp_path):
    spec, _ = raw_and_store
    code, err, _ = run_cli("prep", tmp_path / "nope.toml", "--out", tmp_path / "x.zarr")
    assert code == 2 and "nope.toml: file not found" in err
    (tmp_path / "notastore").mkdir()
    (tmp_path / "notastore" / "precious.txt").write_text("keep me")
    code, err, _ = run_cli("prep", spec, "--out", tmp_path / "notastore", "--workers", "0", "--force")
    assert code == 2 and "is not a steelseg-hpc Zarr store" in err
    assert (tmp_path / "notastore" / "precious.txt").read_text() == "keep me"


def test_real_process_prints_no_traceback(raw_and_store):
    spec, store = raw_and_store
    unknown_key(spec)
    proc = subprocess.run(
        [sys.executable, "-m", "steelseg_hpc", "prep", str(spec), "--out", str(store), "--workers", "0"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "tile_sise" in proc.stderr
