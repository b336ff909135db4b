"""One writer at a time: an exclusive lock file that works on NFS and knows when it is stale.

Two writers of one thing (two ``train`` processes on one run directory, two sweep drivers on one
journal, two ``prep`` runs on one store) would interleave or destroy each other's work, so each
writer takes the thing's lock before it writes anything. The lock is a hard link to a file
holding the owner's host, pid, SLURM job id and start time: ``link`` is atomic on NFS, where
``O_EXCL`` and ``flock`` are not reliable across clients. A lock is stale, and taken over, when
its owner is gone:

- on this host, its pid no longer runs;
- the owner was an earlier attempt of this same SLURM job (a requeued job takes over its own run);
- the owner's SLURM job has ended (asked with ``squeue``; a job of another cluster cannot be asked,
  and its lock is honoured).

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with WriterLock(folder / "store.zarr.lock", folder / "store.zarr"):
    ...     (folder / "store.zarr.lock").exists()
    True
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

import psutil

from steelseg_hpc.compute import slurm
from steelseg_hpc.core.errors import LaunchError, SteelsegError


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _describe(owner: dict) -> str:
    job = f", SLURM job {owner['slurm_job_id']}" if owner.get("slurm_job_id") else ""
    return f"pid {owner.get('pid')} on {owner.get('host')}{job}, since {owner.get('since')}"


def _job_has_ended(job_id: str) -> bool:
    try:
        record = slurm.query_jobs([job_id]).get(job_id)
    except LaunchError:
        return False  # SLURM does not answer here: the owner may be alive on another cluster
    return record is not None and record.state in slurm.TERMINAL_STATES


def is_stale(owner: dict) -> bool:
    """Whether the process that holds the lock is gone (see the module docstring)."""
    job_id = owner.get("slurm_job_id")
    if job_id and job_id == os.environ.get("SLURM_JOB_ID"):
        return True
    if owner.get("host") == socket.gethostname():
        pid = owner.get("pid")
        try:
            return not (isinstance(pid, int) and psutil.pid_exists(pid)
                        and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return True
    return bool(job_id) and _job_has_ended(job_id)


class WriterLock:
    """``with WriterLock(lock_path, guarded):`` holds the lock of ``guarded``, or raises one clear line.

    Args:
        path: The lock file (it must not be inside anything the writer replaces or deletes).
        guarded: What the lock protects, as the refusal names it.
        enabled: False makes the lock a no-op (ranks other than 0 of one run).
        error: The error raised when another live process holds the lock.
        stop_hint: How to stop the holder, for the refusal (e.g. ``steelseg-hpc cancel``).

    Raises:
        SteelsegError: (``error``) another live process holds it; the message names it and the
            way out.
    """

    def __init__(self, path: Path, guarded: Path, enabled: bool = True,
                 error: type[SteelsegError] = SteelsegError, stop_hint: str = ""):
        self.path = Path(path)
        self.guarded = guarded
        self.enabled = enabled
        self.error = error
        self.stop_hint = stop_hint
        self._held = False

    def read_owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        candidate = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex}")
        candidate.write_text(json.dumps(_owner()), encoding="utf-8")
        try:
            for _ in range(3):
                try:
                    os.link(candidate, self.path)
                    self._held = True
                    return
                except FileExistsError:
                    owner = self.read_owner()
                    if owner is not None and not is_stale(owner):
                        stop = f" ({self.stop_hint})" if self.stop_hint else ""
                        raise self.error(
                            f"{self.guarded} is in use by {_describe(owner)}; wait for it or stop it{stop}, "
                            f"or, if that process is gone, delete {self.path}"
                        ) from None
                    self.path.unlink(missing_ok=True)  # stale or unreadable: the owner is gone
            raise self.error(f"{self.path}: could not take the lock of {self.guarded}; try again")
        finally:
            candidate.unlink(missing_ok=True)

    def release(self) -> None:
        if self._held:
            owner = self.read_owner()
            if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
                self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> "WriterLock":
        if self.enabled:
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
