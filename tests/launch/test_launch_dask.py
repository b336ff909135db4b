"""``prep --dask-cluster slurm``: Dask workers as SLURM jobs write the same store as local prep."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest
import zarr

from steelseg_hpc.data import load_spec, prepare

from .conftest import LOCAL_CLUSTER_PROFILE


def _arrays(store) -> dict[str, np.ndarray]:
    root = zarr.open_group(str(store), mode="r")
    found = {}

    def walk(group, prefix):
        for name, array in group.arrays():
            found[f"{prefix}{name}"] = array[...]
        for name, child in group.groups():
            walk(child, f"{prefix}{name}/")

    walk(root, "")
    return found


@pytest.mark.slurm
@pytest.mark.slow
def test_prep_on_slurm_workers_matches_local_prep(slurm_cluster, synthetic_raw, tiny_store, tmp_path,
                                                  monkeypatch):
    monkeypatch.setenv("STEELSEG_DASK_LOG_DIR", str(tmp_path / "dask-logs"))
    out = tmp_path / "slurm.zarr"
    summary = prepare(load_spec(synthetic_raw), out, workers=2, dask_cluster="slurm",
                      profile=str(LOCAL_CLUSTER_PROFILE))
    assert summary.splits["train"].written > 0
    local, remote = _arrays(tiny_store), _arrays(out)
    assert sorted(local) == sorted(remote) and local
    for name in local:
        np.testing.assert_array_equal(local[name], remote[name], err_msg=name)
    local_attrs = dict(zarr.open_group(str(tiny_store), mode="r").attrs)
    remote_attrs = dict(zarr.open_group(str(out), mode="r").attrs)
    assert local_attrs["spec_hash"] == remote_attrs["spec_hash"] and remote_attrs["complete"]
    for split in ("train", "val", "test"):
        assert (zarr.open_group(str(tiny_store), mode="r")[split].attrs.get("provenance")
                == zarr.open_group(str(out), mode="r")[split].attrs.get("provenance"))
    # closing the SLURMCluster cancelled its worker jobs
    queue = subprocess.run(["squeue", "-h", "-n", "dask-worker", "-t", "pending,running"],
                           capture_output=True, text=True).stdout
    assert queue.strip() == ""
    assert list((tmp_path / "dask-logs").glob("dask-worker-*.err"))  # the workers were SLURM jobs
