"""``prep --set KEY=VALUE`` changes one spec field for this store (e.g. a fold of a CV split)."""
from __future__ import annotations

from click.testing import CliRunner

from steelseg_hpc.cli import main
from steelseg_hpc.data import open_store


def _prep(*args):
    result = CliRunner().invoke(main, ["prep", *map(str, args), "--workers", "0"])
    return result.exit_code, result.output


def test_set_overrides_a_spec_field(synthetic_raw, tiny_store, tmp_path):
    code, output = _prep(synthetic_raw, "--out", tmp_path / "dense.zarr", "--set", "tiling.stride=16")
    assert code == 0, output
    dense, default = open_store(tmp_path / "dense.zarr"), open_store(tiny_store)
    assert dense.stride == 16 != default.stride
    assert dense.splits["train"] > default.splits["train"]


def test_an_unknown_spec_key_is_one_line(synthetic_raw, tmp_path):
    code, output = _prep(synthetic_raw, "--out", tmp_path / "x.zarr", "--set", "tiling.strid=16")
    assert code == 2 and "strid" in output and len(output.strip().splitlines()) == 1, output
    assert not (tmp_path / "x.zarr").exists()
