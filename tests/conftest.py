"""Shared fixtures: tiny prepared stores that every stage's tests can train or evaluate on."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METALDAM = Path(os.environ.get("STEELSEG_METALDAM", REPO.parent / "shared" / "data" / "metaldam"))

# Five MetalDAM images that together hold all five classes.
METALDAM_SUBSET = {"train": ["micrograph0", "micrograph17"], "val": ["micrograph30"], "test": ["micrograph36"]}


def write_metaldam_subset_spec(folder: Path, tile: int = 256, stride: int = 256, copies: int = 0) -> Path:
    """A spec over a few MetalDAM images, from data_prep/metaldam.toml with a list split."""
    text = (REPO / "data_prep" / "metaldam.toml").read_text()
    head, _, _ = text.partition("[split]")
    lists = "\n".join(f"{name} = {images!r}".replace("'", '"') for name, images in METALDAM_SUBSET.items())
    spec = head.replace('raw_dir = "../../shared/data/metaldam"', f'raw_dir = "{METALDAM}"')
    spec += f'[split]\nmethod = "lists"\n{lists}\n\n[tiling]\ntile_size = {tile}\nstride = {stride}\n\n[augment]\ncopies = {copies}\n'
    path = folder / "metaldam-subset.toml"
    path.write_text(spec)
    return path


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory) -> Path:
    """A small synthetic lab-style dataset (3 groups x 3 images, 128x112); returns its spec."""
    from steelseg_hpc.data.synth import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("raw"), groups=(3, 3, 3), size=(128, 112), seed=0, tile_size=64, copies=1)


@pytest.fixture(scope="session")
def tiny_store(synthetic_raw, tmp_path_factory) -> Path:
    """A prepared 3-class store with 64-px tiles (train tiles plus one augmented copy each)."""
    from steelseg_hpc.data import load_spec, prepare

    out = tmp_path_factory.mktemp("stores") / "tiny.zarr"
    prepare(load_spec(synthetic_raw), out, workers=0)
    return out


@pytest.fixture(scope="session")
def tiny_store_5(tmp_path_factory) -> Path:
    """A prepared 5-class store from four real MetalDAM images, 256-px tiles, no augmentation."""
    if not METALDAM.is_dir():
        pytest.skip(f"MetalDAM not found at {METALDAM} (set STEELSEG_METALDAM)")
    from steelseg_hpc.data import load_spec, prepare

    folder = tmp_path_factory.mktemp("metaldam")
    out = folder / "metaldam-subset.zarr"
    prepare(load_spec(write_metaldam_subset_spec(folder)), out, workers=0)
    return out


@pytest.fixture(autouse=True)
def _private_experiment_index(tmp_path, monkeypatch):
    """No test reads or writes the user's experiment index (~/.local/share/steelseg-hpc)."""
    monkeypatch.setenv("STEELSEG_INDEX", str(tmp_path / "index.sqlite"))


@pytest.fixture()
def no_worker_environment(monkeypatch):
    """This process without the Dask worker environment, so a worker can only get it from the factory.

    Dask's nanny copies its pre-spawn environment into the process that starts it, so after any
    earlier LocalCluster the variables would otherwise reach new workers by inheritance alone.
    """
    from steelseg_hpc.compute.dask_cluster import WORKER_ENVIRONMENT

    for name in WORKER_ENVIRONMENT:
        monkeypatch.setenv(name, "")  # recorded, so the original value comes back afterwards
        monkeypatch.delenv(name)



def pytest_collection_finish(session):
    """With ``STEELSEG_TEST_NEEDS=FILE``, write which of SLURM and Chromium the selected tests need.

    ``scripts/test`` collects first with the user's arguments and brings up the local SLURM or
    installs Chromium only when a selected test is marked ``slurm`` (or uses the cluster fixture)
    or ``browser``.
    """
    out = os.environ.get("STEELSEG_TEST_NEEDS")
    if not out:
        return
    needs = set()
    for item in session.items:
        if item.get_closest_marker("slurm") or "slurm_cluster" in getattr(item, "fixturenames", ()):
            needs.add("slurm")
        if item.get_closest_marker("browser"):
            needs.add("browser")
    Path(out).write_text("".join(f"{need}\n" for need in sorted(needs)))
