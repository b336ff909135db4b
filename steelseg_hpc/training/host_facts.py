"""Facts about the process and the code that a run directory records: memory, host, versions.

Peak memory is the GPU's max allocated bytes on CUDA, and the process's resident-set high-water
mark (``VmHWM``) on the CPU. Both can be reset, so each epoch reports its own peak.

Example:
    >>> reset_peak_memory(); peak_memory_mb() > 0
    True
"""
from __future__ import annotations

import os
import platform
import resource
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("steelseg-hpc", "torch", "deepspeed", "numpy", "zarr", "torchmetrics", "segment-anything",
            "pydantic")


def reset_peak_memory() -> None:
    """Start a new peak-memory window (GPU allocator stats, or the kernel's RSS high-water mark)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    try:  # Linux: writing 5 to clear_refs resets VmHWM to the current RSS.
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb() -> float:
    """Peak memory since the last reset in MiB: GPU max allocated, or process peak RSS."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def git_commit(path: Path | None = None) -> dict[str, object]:
    """The git commit of the package checkout and whether it has uncommitted changes."""
    cwd = path or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def host_info(world_size: int) -> dict[str, object]:
    """Host name, CPU (cores, and the threads each rank computes with), GPUs, the job's world size
    and SLURM job id: what the run's cost is counted in (see ``sweeps.outcome.run_cost``)."""
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_threads": torch.get_num_threads(),  # each rank's compute threads: a CPU run's cores
        "gpus": gpus,
        "cuda": torch.version.cuda if gpus else None,
        "world_size": world_size,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
