"""The experiment index: which jobs an experiment submitted, and where each one writes.

A small SQLite file, written only by the process that submits (``steelseg-hpc launch``) and read
by ``status``, ``logs`` and ``cancel`` from any shell. Jobs never write to it: what they did is
read from SLURM and from their run directories. The file is ``$STEELSEG_INDEX`` if set, else
``~/.local/share/steelseg-hpc/index.sqlite`` (on a cluster, home is shared by all login nodes).

Example:
    >>> import tempfile, os
    >>> index = ExperimentIndex(os.path.join(tempfile.mkdtemp(), "index.sqlite"))
    >>> index.record_experiment("smoke", "/runs/smoke", None, None, "slurm")
    >>> recorded = index.record_job(JobRow("12_0", "smoke", "unet3plus", 0, "/runs/a", "slurm", "o", "e", 2))
    >>> [row.arch for row in index.jobs("smoke")], index.jobs("smoke")[0] == recorded, recorded.submitted_at > 0
    (['unet3plus'], True, True)
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from steelseg_hpc.core.errors import LaunchError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    name TEXT PRIMARY KEY, folder TEXT NOT NULL, experiment_file TEXT, profile_file TEXT,
    executor TEXT NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL, experiment TEXT NOT NULL, arch TEXT NOT NULL, seed INTEGER NOT NULL,
    run_dir TEXT NOT NULL, executor TEXT NOT NULL, stdout TEXT NOT NULL, stderr TEXT NOT NULL,
    epochs_total INTEGER, submitted_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_experiment ON jobs (experiment);
CREATE INDEX IF NOT EXISTS jobs_by_job_id ON jobs (job_id);
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY, folder TEXT NOT NULL, storage TEXT NOT NULL, sweep_file TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cancellations (
    job_id TEXT NOT NULL, signal TEXT NOT NULL, requested_at REAL NOT NULL
);
"""


def default_index_path() -> Path:
    """``$STEELSEG_INDEX``, else ``~/.local/share/steelseg-hpc/index.sqlite``."""
    env = os.environ.get("STEELSEG_INDEX")
    if env:
        return Path(env)
    return Path.home() / ".local" / "share" / "steelseg-hpc" / "index.sqlite"


@dataclass(frozen=True)
class JobRow:
    """One submitted job as recorded at submission."""

    job_id: str
    experiment: str
    arch: str
    seed: int
    run_dir: str
    executor: str
    stdout: str
    stderr: str
    epochs_total: int | None = None
    submitted_at: float = 0.0


_COLUMNS = [f.name for f in fields(JobRow)]


class ExperimentIndex:
    """Read and write the index at ``path`` (created on first write)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_index_path()

    @contextlib.contextmanager
    def _connect(self, write: bool) -> Iterator[sqlite3.Connection]:
        """A connection (a transaction when writing); a damaged file is a one-line LaunchError."""
        if self.path.is_dir():
            raise LaunchError(f"experiment index {self.path} is a folder; set STEELSEG_INDEX to a file path")
        if not write and not self.path.exists():
            raise LaunchError(f"no experiment index at {self.path}: nothing was launched yet "
                              "(or set STEELSEG_INDEX to the index the launch used)")
        try:
            if write:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise LaunchError(f"experiment index {self.path}: {exc}") from None
        try:
            conn.row_factory = sqlite3.Row
            if write:
                conn.executescript(_SCHEMA)
            with conn:
                yield conn
        except sqlite3.DatabaseError as exc:
            raise LaunchError(f"experiment index {self.path} cannot be read ({exc}): it is damaged or not "
                              "an index; move it aside and the next launch starts a new one") from None
        finally:
            conn.close()

    def record_experiment(self, name: str, folder: Path, experiment_file: str | None,
                          profile_file: str | None, executor: str) -> None:
        """Create or update an experiment's entry."""
        with self._connect(write=True) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO experiments VALUES (?, ?, ?, ?, ?, ?)",
                (name, str(folder), experiment_file, profile_file, executor, time.time()),
            )

    def record_job(self, row: JobRow) -> JobRow:
        """Append one submitted job; returns the row as recorded (with its submission time)."""
        if not row.submitted_at:
            row = JobRow(*astuple(row)[:-1], submitted_at=time.time())
        with self._connect(write=True) as conn:
            conn.execute(
                f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                astuple(row),
            )
        return row

    def experiments(self) -> list[str]:
        """Experiment names, most recently launched first."""
        with self._connect(write=False) as conn:
            rows = conn.execute("SELECT name FROM experiments ORDER BY updated_at DESC").fetchall()
        return [row["name"] for row in rows]

    def jobs(self, experiment: str | None = None, latest_only: bool = True) -> list[JobRow]:
        """Jobs of one experiment (or all), in submission order.

        Args:
            latest_only: keep only the newest job per run directory (a relaunch resumes the
                same run, so older jobs for it are history).
        """
        query = f"SELECT {', '.join(_COLUMNS)} FROM jobs"
        args: tuple = ()
        if experiment is not None:
            query, args = query + " WHERE experiment = ?", (experiment,)
        with self._connect(write=False) as conn:
            if experiment is not None and not conn.execute(
                "SELECT 1 FROM experiments WHERE name = ?", (experiment,)
            ).fetchone():
                known = ", ".join(self.experiments()) or "none"
                raise LaunchError(f"unknown experiment {experiment!r} in {self.path} (known: {known})")
            rows = [JobRow(**dict(row)) for row in conn.execute(query + " ORDER BY id", args)]
        if latest_only:
            newest = {row.run_dir: row for row in rows}
            rows = [row for row in rows if newest[row.run_dir] is row]
        return rows

    def find_job(self, job_id: str) -> JobRow:
        """The newest job recorded under ``job_id``."""
        with self._connect(write=False) as conn:
            row = conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE job_id = ? ORDER BY id DESC LIMIT 1",
                (job_id,),
            ).fetchone()
        if row is None:
            raise LaunchError(f"job {job_id!r} is not in the experiment index {self.path}")
        return JobRow(**dict(row))

    def record_sweep(self, name: str, folder: Path, storage: str, sweep_file: str | None) -> None:
        """Create or update a sweep's entry (its jobs are recorded as an experiment of that name)."""
        with self._connect(write=True) as conn:
            conn.execute("INSERT OR REPLACE INTO sweeps VALUES (?, ?, ?, ?, ?)",
                         (name, str(folder), storage, sweep_file, time.time()))

    def sweeps(self) -> list[dict[str, str]]:
        """Every recorded sweep (name, folder, storage, sweep_file), most recent first."""
        if not self.path.exists():
            return []
        with self._connect(write=False) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "sweeps" not in tables:
                return []
            rows = conn.execute("SELECT name, folder, storage, sweep_file FROM sweeps ORDER BY updated_at DESC")
            return [dict(row) for row in rows]

    def record_cancellation(self, job_id: str, signal_name: str) -> None:
        """Note that ``cancel`` signalled ``job_id`` (local jobs have no scheduler to remember it)."""
        with self._connect(write=True) as conn:
            conn.execute("INSERT INTO cancellations VALUES (?, ?, ?)", (job_id, signal_name, time.time()))

    def cancelled(self, job_id: str, since: float = 0.0) -> bool:
        """Whether ``cancel`` (without ``--signal``) was asked to stop ``job_id`` after ``since``.

        ``since`` is the job's submission time: a local job id is a pid, which a later job may reuse.
        """
        if not self.path.exists():
            return False  # no index yet (a detached sweep driver that has not started): nothing was cancelled
        with self._connect(write=False) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "cancellations" not in tables:  # an index written before cancellations were recorded
                return False
            return conn.execute("SELECT 1 FROM cancellations WHERE job_id = ? AND signal = 'TERM' "
                                "AND requested_at >= ?", (job_id, since)).fetchone() is not None

    def is_experiment(self, name: str) -> bool:
        """True when ``name`` names a recorded experiment (False while there is no index)."""
        return self.path.exists() and name in self.experiments()
