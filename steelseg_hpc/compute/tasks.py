"""Run independent tasks on Dask (a LocalCluster, a scheduler address, or SLURM) or in-process.

One small interface, like submitit's executors: ``TaskRunner.map(fn, argument_tuples)`` yields
results as tasks finish. ``workers=0`` runs in this process (for debugging and as the baseline in
``benchmarks/prep.py``).

A bad input that a task detects (a missing mask, a truncated file) is an expected outcome, not a
worker crash: the task returns it as a :class:`TaskFailure` and :meth:`TaskRunner.map` raises the
same :class:`~steelseg_hpc.core.errors.SteelsegError` in the client. Dask therefore never logs a
"Compute Failed" traceback for it, and the user sees only the one-line message.

Example:
    >>> with TaskRunner(workers=0) as runner:
    ...     sorted(runner.map(pow, [(2, 3), (3, 2)]))
    [8, 9]
"""
from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steelseg_hpc.compute.dask_cluster import connect, make_dask_cluster
from steelseg_hpc.core.errors import ConfigError, SteelsegError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskFailure:
    """A user-facing error raised inside a task, carried back as the task's result."""

    error_type: type[SteelsegError]
    message: str

    def reraise(self) -> None:
        raise self.error_type(self.message)


def run_capturing_errors(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, with a :class:`SteelsegError` returned as a :class:`TaskFailure`."""
    try:
        return fn(*args)
    except SteelsegError as exc:
        return TaskFailure(type(exc), str(exc))


def _host_name(address: str) -> str:
    """The name of the host at ``address`` where it resolves (a node name says more than an IP)."""
    try:
        return socket.gethostbyaddr(address)[0]
    except OSError:
        return address


class TaskRunner(contextlib.AbstractContextManager):
    """Start a Dask client (or none) for the duration of a ``with`` block.

    Args:
        workers: Dask worker processes (one thread each); 0 runs tasks in this process.
        cluster: ``"local"`` (a LocalCluster), ``"slurm"`` (dask-jobqueue SLURMCluster from
            ``profile``) or a scheduler address such as ``tcp://10.0.0.5:8786``.
        profile: cluster profile name or path, for ``cluster="slurm"``.
    """

    def __init__(self, workers: int = 2, cluster: str = "local", profile: str | Path | None = None):
        if workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {workers}")
        if cluster not in ("local", "slurm") and "://" not in cluster:
            raise ConfigError(f"--dask-cluster {cluster!r}: expected local, slurm or a scheduler "
                              "address like tcp://HOST:8786")
        self.workers = workers
        self.cluster_kind = cluster
        self.profile = profile
        self._cluster = None
        self.client = None

    def __enter__(self) -> "TaskRunner":
        if self.workers == 0 and self.cluster_kind == "local":
            return self
        wanted = max(self.workers, 1)
        self._cluster = make_dask_cluster(self.cluster_kind, wanted, self.profile)
        try:
            self.client = connect(self._cluster, workers=wanted if self.cluster_kind == "slurm" else 0)
        except BaseException:
            self._close_cluster()
            raise
        if isinstance(self._cluster, str):
            self._cluster = None  # a scheduler we did not start: never close it
        return self

    def _close_cluster(self) -> None:
        if self._cluster is not None and not isinstance(self._cluster, str):
            self._cluster.close()
        self._cluster = None

    def __exit__(self, *exc_info) -> None:
        if self.client is not None:
            self.client.close()
        self._close_cluster()

    def _workers(self) -> dict[str, str]:
        """The workers the scheduler knows now: address -> host."""
        return {address: info.get("host", address)
                for address, info in self.client.scheduler_info()["workers"].items()}

    def _note_lost_workers(self, before: dict[str, str]) -> dict[str, str]:
        """Say which workers went away since ``before`` (a node crashed, a job ended); the workers now."""
        now = self._workers()
        for address in sorted(set(before) - set(now)):
            log.warning("lost the Dask worker on %s (%s); the scheduler runs its tasks again on the %d "
                        "left", _host_name(before[address]), address, len(now))
        return now

    def map(self, fn: Callable[..., Any], calls: list[tuple]) -> Iterator[Any]:
        """Run ``fn(*args)`` for every tuple in ``calls``; yield results in completion order.

        A task's :class:`SteelsegError` is raised here, in the client, with the same message; any
        other exception propagates unchanged. A worker lost on the way (its node crashed, its job
        ended) costs only time: Dask runs its tasks again on the others, and this says so.
        """
        if self.client is None:
            for args in calls:
                yield fn(*args)
            return
        from dask.distributed import as_completed

        futures = [self.client.submit(run_capturing_errors, fn, *args, pure=False) for args in calls]
        workers = self._workers()
        try:
            for future in as_completed(futures):
                workers = self._note_lost_workers(workers)
                result = future.result()
                if isinstance(result, TaskFailure):
                    result.reraise()
                yield result
        finally:  # on an error, don't leave the rest running on the cluster
            unfinished = [f for f in futures if not f.done()]
            if unfinished:
                self.client.cancel(unfinished)
