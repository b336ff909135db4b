"""Run independent tasks on Dask (a LocalCluster, a scheduler address, or SLURM) or in-process.

One small interface, like submitit's executors: ``TaskRunner.map(fn, argument_tuples)`` yields
results as tasks finish. ``workers=0`` runs in this process (for debugging and as the baseline in
``benchmarks/prep.py``).
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from steelseg_hpc.errors import ConfigError

log = logging.getLogger(__name__)

# Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 for its workers. Setting any malloc threshold turns
# off glibc's dynamic mmap threshold, so every tile-sized numpy buffer became a fresh mmap with
# page faults: prep tasks ran ~1.8x slower in a worker than in-process (measured, benchmarks/prep.py).
# Large thresholds keep such buffers in the heap. One thread per worker for BLAS/OpenMP, as Dask does.
WORKER_ENVIRONMENT = {
    "MALLOC_TRIM_THRESHOLD_": str(256 << 20),
    "MALLOC_MMAP_THRESHOLD_": str(64 << 20),
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


class TaskRunner(contextlib.AbstractContextManager):
    """Start a Dask client (or none) for the duration of a ``with`` block.

    Args:
        workers: Dask worker processes (one thread each); 0 runs tasks in this process.
        cluster: ``"local"`` (a LocalCluster), ``"slurm"`` (dask-jobqueue SLURMCluster from
            ``profile``) or a scheduler address such as ``tcp://10.0.0.5:8786``.
        profile: cluster profile path, for ``cluster="slurm"``.
    """

    def __init__(self, workers: int = 2, cluster: str = "local", profile: str | None = None):
        if workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {workers}")
        self.workers = workers
        self.cluster_kind = cluster
        self.profile = profile
        self._cluster = None
        self.client = None

    def __enter__(self) -> "TaskRunner":
        if self.workers == 0 and self.cluster_kind == "local":
            return self
        from dask.distributed import Client, LocalCluster

        # distributed logs every connection at INFO, and a slow worker teardown at WARNING; a task
        # failure still reaches the user, as the task's own exception from ``map``
        logging.getLogger("distributed").setLevel(max(logging.ERROR, logging.getLogger().level))
        if self.cluster_kind == "local":
            import dask

            with dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENVIRONMENT}):
                self._cluster = LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            self.client = Client(self._cluster)
        elif self.cluster_kind == "slurm":
            from steelseg_hpc.launch.dask_cluster import make_dask_cluster

            self._cluster = make_dask_cluster("slurm", max(self.workers, 1), self.profile)
            self.client = Client(self._cluster)
            self.client.wait_for_workers(max(self.workers, 1), timeout=600)
        else:
            try:
                self.client = Client(self.cluster_kind, timeout=30)
            except OSError as exc:
                raise ConfigError(f"--dask-cluster {self.cluster_kind}: cannot connect ({exc})") from None
        return self

    def __exit__(self, *exc_info) -> None:
        if self.client is not None:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def map(self, fn: Callable[..., Any], calls: list[tuple]) -> Iterator[Any]:
        """Run ``fn(*args)`` for every tuple in ``calls``; yield results in completion order.

        A task's exception is re-raised here, in the client, unchanged (so a DataError raised on a
        worker reaches the user as the same one-line message).
        """
        if self.client is None:
            for args in calls:
                yield fn(*args)
            return
        from dask.distributed import as_completed

        futures = [self.client.submit(fn, *args, pure=False) for args in calls]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:  # on an error, don't leave the rest running on the cluster
            unfinished = [f for f in futures if not f.done()]
            if unfinished:
                self.client.cancel(unfinished)
