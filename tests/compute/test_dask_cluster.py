"""The Dask factory gives every kind of worker the same environment (issue 9, part 2).

The glibc malloc thresholds only act if a worker process is *started* with them, so these tests
read each worker's start environment (``/proc/self/environ``), not its ``os.environ``.
"""
from __future__ import annotations

import os

import pytest

from steelseg_hpc.compute.dask_cluster import (
    WORKER_ENVIRONMENT,
    connect,
    make_dask_cluster,
    process_start_environment,
    worker_environment_mismatches,
)

MALLOC = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")


def _current_environment() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in WORKER_ENVIRONMENT}


def test_local_workers_start_with_the_worker_environment(no_worker_environment):
    assert not set(MALLOC) & set(os.environ)
    cluster = make_dask_cluster("local", 1)
    try:
        client = connect(cluster)
        started = client.run(process_start_environment)
        assert len(started) == 1
        for environment in started.values():
            assert {name: environment.get(name) for name in MALLOC} == {name: WORKER_ENVIRONMENT[name] for name in MALLOC}
        assert worker_environment_mismatches(client) == {}
        client.close()
    finally:
        cluster.close()


def test_workers_of_a_foreign_scheduler_get_the_environment_on_connect(no_worker_environment):
    from dask.distributed import LocalCluster

    # started without the factory: Dask's own nanny setting (MALLOC_TRIM_THRESHOLD_=65536)
    foreign = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        address = make_dask_cluster(foreign.scheduler_address, 1)
        assert address == foreign.scheduler_address
        client = connect(address)
        mismatches = worker_environment_mismatches(client)
        assert [wrong["MALLOC_TRIM_THRESHOLD_"] for wrong in mismatches.values()] == ["65536"]
        assert list(client.run(_current_environment).values()) == [WORKER_ENVIRONMENT]
        client.close()
    finally:
        foreign.close()


def test_process_start_environment_is_the_start_not_the_present(monkeypatch):
    monkeypatch.setenv("STEELSEG_SET_AFTER_START", "1")
    assert "STEELSEG_SET_AFTER_START" not in process_start_environment()
    assert process_start_environment(os.getpid()) == process_start_environment()


def test_a_bad_worker_count_is_a_config_error():
    from steelseg_hpc.core.errors import ConfigError

    with pytest.raises(ConfigError, match="at least one worker"):
        make_dask_cluster("local", 0)
