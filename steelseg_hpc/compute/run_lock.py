"""One writer per run directory: rank 0 takes ``RUN_DIR/.lock`` before it writes anything.

Two ``train`` processes on one run directory (a manual run beside a launched job, a relaunch while
the first job runs) would interleave epochs in one ``metrics.jsonl`` and race on checkpoints. The
lock is :class:`~steelseg_hpc.compute.writer_lock.WriterLock` (NFS-safe, stale when its owner is
gone).

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with RunLock(folder):
    ...     (folder / ".lock").exists()
    True
"""
from __future__ import annotations

from pathlib import Path

from steelseg_hpc.compute.writer_lock import WriterLock, is_stale
from steelseg_hpc.core.errors import TrainingError

__all__ = ["LOCK_NAME", "RunLock", "is_stale"]

LOCK_NAME = ".lock"


class RunLock(WriterLock):
    """``with RunLock(run_dir):`` holds the run directory's lock, or raises one clear line.

    Raises:
        TrainingError: another live process holds it (the message names it and the way out).
    """

    def __init__(self, run_dir: Path, enabled: bool = True):
        super().__init__(Path(run_dir) / LOCK_NAME, Path(run_dir), enabled, TrainingError,
                         stop_hint="steelseg-hpc cancel")
