"""``prep --dask-cluster slurm``: Dask workers as SLURM jobs, with the same environment as local
workers, write the same store as local prep."""
from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import zarr

from steelseg_hpc.compute.dask_cluster import (
    WORKER_ENVIRONMENT,
    connect,
    make_dask_cluster,
    process_start_environment,
    worker_environment_mismatches,
)
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


def _worker_and_nanny_start_environments() -> tuple[dict[str, str], dict[str, str]]:
    return process_start_environment(), process_start_environment(os.getppid())


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_workers_start_with_the_worker_environment(slurm_cluster, tmp_path, no_worker_environment):
    """The job prologue's DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON reaches the worker process."""
    cluster = make_dask_cluster("slurm", 1, LOCAL_CLUSTER_PROFILE, log_directory=tmp_path / "dask-logs")
    try:
        client = connect(cluster, workers=1, timeout=120)
        [(worker, nanny)] = client.run(_worker_and_nanny_start_environments).values()
        assert "SLURM_JOB_ID" in worker  # a SLURM job, not a local process
        for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"):
            assert worker.get(name) == WORKER_ENVIRONMENT[name], name
            # the job itself started without it: the nanny put it there, from Dask's config
            assert name not in nanny, name
        assert worker_environment_mismatches(client) == {}
        client.close()
    finally:
        cluster.close()
