"""The one Dask cluster factory: a LocalCluster, a running scheduler, or dask-jobqueue SLURM workers.

Every kind of worker gets the same environment and the same quiet logging:

- local and SLURM workers are *started* with :data:`WORKER_ENVIRONMENT` (through the nanny's
  ``pre-spawn-environ``, which is also what the nanny would otherwise fill with its own malloc
  setting), so ``/proc/<pid>/environ`` of a worker shows it;
- a worker of a scheduler we did not start cannot be restarted with another environment, so
  :class:`WorkerSetup` applies the same malloc thresholds with ``mallopt`` and the same thread
  limits when the client connects (it runs on every kind, as a safety net).

Expected data errors travel back as task *results* (:mod:`steelseg_hpc.compute.tasks`), so a
worker never logs "Compute Failed"; what workers still log at shutdown (heartbeats to a scheduler
that has just closed) is noise to a user, hence ``critical``.

Example:
    >>> from dask.distributed import Client
    >>> cluster = make_dask_cluster("slurm", 2, "local-cluster")  # doctest: +SKIP
    >>> client = connect(cluster, workers=2)                       # doctest: +SKIP
    >>> cluster.close()  # cancels the worker jobs                  # doctest: +SKIP
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from steelseg_hpc.compute.profiles import ClusterProfile, check_profile, load_profile
from steelseg_hpc.core.errors import ConfigError

log = logging.getLogger(__name__)

# Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 for its workers. Setting any malloc threshold turns
# off glibc's dynamic mmap threshold, so every tile-sized numpy buffer became a fresh mmap with
# page faults: prep tasks ran ~1.8x slower in a worker than in-process (measured, benchmarks/prep.py).
# Large thresholds keep such buffers in the heap. One thread per worker for BLAS/OpenMP, as Dask does.
_TRIM_THRESHOLD = 256 << 20
_MMAP_THRESHOLD = 64 << 20
WORKER_ENVIRONMENT = {
    "MALLOC_TRIM_THRESHOLD_": str(_TRIM_THRESHOLD),
    "MALLOC_MMAP_THRESHOLD_": str(_MMAP_THRESHOLD),
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NO_ALBUMENTATIONS_UPDATE": "1",
}

#: Dask's own config, as environment variables for processes Dask starts from a shell (SLURM jobs).
_QUIET_WORKER_CONFIG = {
    "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": json.dumps(WORKER_ENVIRONMENT),
    "DASK_LOGGING__DISTRIBUTED": "critical",
}

#: The scheduler always serves HTTP (health, metrics); without an address it takes port 8787 and
#: *warns* on stderr when another cluster holds it. A free loopback port and no Bokeh dashboard.
_NO_DASHBOARD = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def apply_worker_environment() -> dict[str, str]:
    """Give this (already running) process the worker environment; returns what it set.

    Environment variables only affect libraries that read them later; the malloc thresholds are
    set directly with glibc's ``mallopt`` (a no-op elsewhere).
    """
    os.environ.update(WORKER_ENVIRONMENT)
    libc_name = ctypes.util.find_library("c")
    if sys.platform.startswith("linux") and libc_name:
        libc = ctypes.CDLL(libc_name)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    quiet_dask_logging()
    return dict(WORKER_ENVIRONMENT)


def process_start_environment(pid: int | str = "self") -> dict[str, str]:
    """The environment a process was *started* with (``/proc/PID/environ``; Linux only).

    glibc reads ``MALLOC_*_`` once, at start-up, so only the start environment tells whether a
    worker runs with the malloc thresholds; ``os.environ`` may have been changed since.

    Args:
        pid: a process id of this user, or ``"self"``.

    Example:
        >>> "PATH" in process_start_environment()
        True
    """
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (entry.split(b"=", 1) for entry in raw.split(b"\0") if b"=" in entry)
    return {name.decode(errors="replace"): value.decode(errors="replace") for name, value in pairs}


def worker_environment_mismatches(client: Any) -> dict[str, dict[str, str | None]]:
    """Per worker, each :data:`WORKER_ENVIRONMENT` variable it was started without (or with another value).

    Returns:
        ``{worker address: {name: value at start, None if unset}}``; empty when every worker of
        ``client`` started with the environment. Workers of a scheduler we did not start are
        expected here (they get the thresholds through ``mallopt`` instead).

    Example:
        >>> worker_environment_mismatches(client)  # doctest: +SKIP
        {}
    """
    started = client.run(process_start_environment)
    mismatches = {}
    for address, environment in started.items():
        wrong = {name: environment.get(name) for name, value in WORKER_ENVIRONMENT.items()
                 if environment.get(name) != value}
        if wrong:
            mismatches[address] = wrong
    return mismatches


def quiet_dask_logging() -> None:
    """Silence distributed's loggers in this process (a user sees task errors, not worker noise).

    Kept at ``-vv`` (root logger at DEBUG), where a user asked to see everything.
    """
    # importing distributed sets its logger to INFO; when the root logger already has a handler
    # (the CLI's), distributed's records propagate to it, so the level must be set after the import
    import distributed  # noqa: F401

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("distributed").setLevel(logging.CRITICAL)


def _worker_setup_plugin():
    from distributed.diagnostics.plugin import WorkerPlugin

    class WorkerSetup(WorkerPlugin):
        """Apply :func:`apply_worker_environment` on every worker, present and future."""

        name = "steelseg-worker-setup"

        def setup(self, worker) -> None:  # noqa: ARG002 - the plugin API passes the worker
            apply_worker_environment()

    return WorkerSetup()


def _walltime(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def slurm_cluster_options(profile: ClusterProfile, log_directory: str | Path) -> dict[str, Any]:
    """Keyword arguments for ``dask_jobqueue.SLURMCluster`` from a profile.

    Example:
        >>> opts = slurm_cluster_options(ClusterProfile(partition="gpu", time_min=90), "/tmp/x")
        >>> opts["queue"], opts["walltime"], opts["cores"]
        ('gpu', '01:30:00', 1)
    """
    directives = []
    if profile.qos:
        directives.append(f"--qos={profile.qos}")
    if profile.constraint:
        directives.append(f"--constraint={profile.constraint}")
    for key, value in profile.slurm_extra.items():
        directives.append(f"--{key}" if value is True else f"--{key}={value}")
    exports = [f"export {name}='{value}'" for name, value in _QUIET_WORKER_CONFIG.items()]
    options: dict[str, Any] = {
        "queue": profile.partition,
        "account": profile.account,
        "cores": profile.cpus_per_task,
        "processes": 1,
        "memory": f"{profile.mem_gb}GB",
        "walltime": _walltime(profile.time_min),
        "job_script_prologue": [*profile.setup, *exports],
        "job_extra_directives": directives,
        "python": profile.python or sys.executable,
        "log_directory": str(log_directory),
        "silence_logs": logging.CRITICAL,
    }
    scheduler = dict(_NO_DASHBOARD)
    if profile.dask_interface:
        options["interface"] = profile.dask_interface
        scheduler["interface"] = profile.dask_interface
    options["scheduler_options"] = scheduler
    return options


def _as_profile(profile: ClusterProfile | str | Path | None) -> ClusterProfile:
    if profile is None:
        raise ConfigError("--dask-cluster slurm needs a cluster profile: --profile NAME (e.g. local-cluster)")
    if isinstance(profile, ClusterProfile):
        return profile
    return load_profile(profile)


def make_dask_cluster(kind: str, workers: int, profile: ClusterProfile | str | Path | None = None,
                      log_directory: str | Path | None = None) -> Any:
    """A Dask cluster with ``workers`` single-threaded worker processes, or a scheduler address.

    Args:
        kind: ``"local"`` (a LocalCluster), ``"slurm"`` (a SLURMCluster from ``profile``) or a
            scheduler address such as ``"tcp://10.0.0.5:8786"`` (returned as is: connect a
            ``Client`` to it with :func:`connect`).
        workers: worker processes; on SLURM one job each, asked for right away.
        profile: a cluster profile, its TOML path or its name (``kind="slurm"`` only).
        log_directory: where the worker jobs' logs go (default: ``$STEELSEG_DASK_LOG_DIR``, else
            ``steelseg-dask-logs`` in the temp dir).

    Raises:
        ConfigError: an unknown kind, ``kind="slurm"`` without a profile, or a bad profile.
        LaunchError: the profile does not fit the cluster (unknown partition, ...).
    """
    if workers < 1:
        raise ConfigError(f"a Dask cluster needs at least one worker, got {workers}")
    if kind == "local":
        import dask
        from dask.distributed import LocalCluster

        quiet_dask_logging()  # the scheduler runs in this process
        with dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENVIRONMENT,
                              "logging.distributed": "critical"}):
            return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                dashboard_address=None, scheduler_kwargs=dict(_NO_DASHBOARD),
                                silence_logs=logging.CRITICAL)
    if kind != "slurm":
        if "://" not in kind:
            raise ConfigError(f"--dask-cluster {kind!r}: expected local, slurm or a scheduler "
                              "address like tcp://HOST:8786")
        return kind
    resolved = _as_profile(profile)
    check_profile(resolved.model_copy(update={"executor": "slurm", "gpus_per_node": 0,
                                              "tasks_per_node": None}))
    from dask_jobqueue import SLURMCluster

    quiet_dask_logging()
    log_directory = (log_directory or os.environ.get("STEELSEG_DASK_LOG_DIR")
                     or Path(tempfile.gettempdir()) / "steelseg-dask-logs")
    Path(log_directory).mkdir(parents=True, exist_ok=True)
    cluster = SLURMCluster(**slurm_cluster_options(resolved, log_directory))
    cluster.scale(jobs=workers)
    return cluster


def connect(cluster: Any, workers: int = 0, timeout: float = 600) -> Any:
    """A ``Client`` to ``cluster`` (a cluster object or a scheduler address), workers set up.

    Args:
        workers: wait until this many workers have joined (SLURM jobs take a while to start).

    Raises:
        ConfigError: a scheduler address that does not answer.
    """
    from dask.distributed import Client

    quiet_dask_logging()
    try:
        client = Client(cluster, timeout=30) if isinstance(cluster, str) else Client(cluster)
    except OSError as exc:
        raise ConfigError(f"--dask-cluster {cluster}: cannot connect ({exc})") from None
    client.register_plugin(_worker_setup_plugin())
    if workers:
        client.wait_for_workers(workers, timeout=timeout)
    return client
