import numpy as np
from click.testing import CliRunner
from PIL import Image
from scipy import ndimage

from steelseg_hpc.cli import main
from steelseg_hpc.data import load_spec, open_store
from steelseg_hpc.data.synth import make_synthetic_dataset, synth_micrograph


def test_same_seed_same_dataset_other_seed_differs(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", groups=(3, 3), size=(80, 72), seed=1, tile_size=32)
    b = make_synthetic_dataset(tmp_path / "b", groups=(3, 3), size=(80, 72), seed=1, tile_size=32)
    c = make_synthetic_dataset(tmp_path / "c", groups=(3, 3), size=(80, 72), seed=2, tile_size=32)
    files = sorted(p.relative_to(a.parent) for p in a.parent.rglob("*.png"))
    assert len(files) == 12
    assert all((a.parent / f).read_bytes() == (b.parent / f).read_bytes() for f in files)
    assert any((a.parent / f).read_bytes() != (c.parent / f).read_bytes() for f in files)


def test_lab_layout_masks_and_spec(tmp_path):
    spec_path = make_synthetic_dataset(tmp_path, groups=(3, 4), size=(64, 48), seed=0, tile_size=32)
    image = np.asarray(Image.open(tmp_path / "images" / "E2" / "E2_03.png"))
    mask = np.asarray(Image.open(tmp_path / "masks" / "E2" / "E2_03.png"))
    assert image.shape == (48, 64) and image.dtype == np.uint8
    assert mask.shape == (48, 64, 3) and set(np.unique(mask)) <= {0, 128, 255}
    spec = load_spec(spec_path).spec
    assert spec.classes.names == ["ferrite", "pearlite", "carbide"]
    assert spec.split.counts["E2"].train == 2


def test_three_phases_with_different_textures():
    image, labels = synth_micrograph(256, 256, seed=3)
    fractions = np.bincount(labels.ravel(), minlength=3) / labels.size
    assert (fractions > 0.005).all()
    # lamellae give pearlite more local contrast than ferrite grains, once shot noise is smoothed
    smooth = ndimage.gaussian_filter(image.astype(float), 1.0)
    local_std = np.sqrt(np.maximum(ndimage.uniform_filter(smooth**2, 5) - ndimage.uniform_filter(smooth, 5) ** 2, 0))
    busy = [local_std[ndimage.binary_erosion(labels == k, iterations=3)].mean() for k in (0, 1)]
    assert busy[1] > 1.4 * busy[0]
    # carbides are the brightest phase, but grey levels of ferrite and pearlite overlap
    means = [image[labels == k].mean() for k in range(3)]
    assert means[2] > max(means[:2]) + 40
    assert abs(means[0] - means[1]) < 30


def test_quick_demo_with_no_epochs_only_preps(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--quick", "--dir", str(tmp_path / "demo"), "--size", "96x96", "--tile-size", "48", "--workers", "0", "--epochs", "0"])
    assert result.exit_code == 0, result.output
    info = open_store(tmp_path / "demo" / "store.zarr")
    assert info.num_classes == 3 and info.splits["train"] > 0
    assert "tiles written" in result.output


def test_synth_rejects_bad_arguments(tmp_path):
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path), "--groups", "6,x"])
    assert result.exit_code == 2 and "--groups" in result.stderr
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path), "--size", "100"])
    assert result.exit_code == 2 and "WIDTHxHEIGHT" in result.stderr
    for args, expected in ((["--size", "64x64", "--tile-size", "128"], "--tile-size 128: expected 8 to 64"),
                           (["--size", "64x48", "--copies", "-1"], "--copies -1: expected 0 or more")):
        result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "bad"), "--groups", "3,3,3", *args])
        assert result.exit_code == 2 and expected in result.stderr, result.output
        assert not (tmp_path / "bad").exists()
