"""Who am I in the job: rank, world size and rendezvous, from torchrun, SLURM or nothing.

DeepSpeed reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` and
falls back to MPI without them, even for a single process. :func:`setup_distributed` resolves them
from whichever launcher started us and exports them before DeepSpeed starts:

- ``torchrun`` already sets all five;
- ``srun`` sets ``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_LOCALID``; the master is the first
  host of ``SLURM_JOB_NODELIST`` (via ``scontrol show hostnames``, or parsed here when scontrol is
  missing) and the port is derived from the job id so every task agrees on it;
- a plain ``python`` process on a laptop is rank 0 of 1 on a free local port.

Example:
    >>> env = resolve_dist_env({"SLURM_PROCID": "1", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
    ...                         "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "1234"})
    >>> (env.rank, env.world_size, env.local_rank, env.master_addr, env.launcher)
    (1, 4, 1, 'gpu07', 'slurm')
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from typing import Mapping

log = logging.getLogger(__name__)

DEFAULT_PORT_BASE = 20000


@dataclass(frozen=True)
class DistEnv:
    """One process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str  # "torchrun", "slurm" or "single"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def as_environ(self) -> dict[str, str]:
        """The variables DeepSpeed and torch.distributed read."""
        return {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand a SLURM host list such as ``"gpu[01-03,07],login1"`` into host names.

    Example:
        >>> expand_nodelist("gpu[01-02,07],cpu-a[9-10]")
        ['gpu01', 'gpu02', 'gpu07', 'cpu-a9', 'cpu-a10']
    """
    hosts: list[str] = []
    for item in _split_top_level(nodelist):
        hosts.extend(_expand_item(item))
    return hosts


def _split_top_level(text: str) -> list[str]:
    items, depth, current = [], 0, ""
    for char in text:
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    return [item.strip() for item in items if item.strip()]


def _expand_item(item: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", item)
    if not match:
        return [item]
    head, tail = item[: match.start()], item[match.end():]
    names = []
    for part in match.group(1).split(","):
        low, _, high = part.partition("-")
        if high:
            width = len(low)
            names += [f"{n:0{width}d}" for n in range(int(low), int(high) + 1)]
        else:
            names.append(low)
    return [expanded for name in names for expanded in _expand_item(head + name + tail)]


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list, asking ``scontrol`` when it is installed."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist],
                capture_output=True, text=True, check=True, timeout=30,
            ).stdout.split()
            if out:
                return out[0]
        except (subprocess.SubprocessError, OSError) as exc:
            log.debug("scontrol show hostnames failed (%s); parsing the node list", exc)
    hosts = expand_nodelist(nodelist)
    return hosts[0] if hosts else "127.0.0.1"


def job_port(job_id: int | str) -> int:
    """The rendezvous port of a SLURM job: fixed per job (a requeued job reuses it), and two
    jobs sharing a node differ unless their ids are 10000 apart."""
    digits = "".join(ch for ch in str(job_id) if ch.isdigit()) or "0"
    return DEFAULT_PORT_BASE + int(digits) % 10000


def free_port() -> int:
    """A TCP port that is free on this host right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resolve_dist_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Work out rank, world size and rendezvous from the environment (no side effects)."""
    environ = os.environ if environ is None else environ
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return DistEnv(
            rank=int(environ["RANK"]),
            world_size=int(environ["WORLD_SIZE"]),
            local_rank=int(environ.get("LOCAL_RANK", "0")),
            master_addr=environ.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(environ.get("MASTER_PORT", "29500")),
            launcher="torchrun",
        )
    if "SLURM_PROCID" in environ and "SLURM_NTASKS" in environ:
        nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST", "")
        master = environ.get("MASTER_ADDR") or (first_host(nodelist) if nodelist else "127.0.0.1")
        port = int(environ.get("MASTER_PORT") or job_port(environ.get("SLURM_JOB_ID", "0")))
        return DistEnv(
            rank=int(environ["SLURM_PROCID"]),
            world_size=int(environ["SLURM_NTASKS"]),
            local_rank=int(environ.get("SLURM_LOCALID", "0")),
            master_addr=master,
            master_port=port,
            launcher="slurm",
        )
    return DistEnv(0, 1, 0, "127.0.0.1", int(environ.get("MASTER_PORT", 0)) or free_port(), "single")


def backend_for_device() -> str:
    """NCCL when CUDA GPUs are present, gloo on the CPU."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def setup_distributed(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Export the rendezvous variables, pick the device and start the process group once.

    Calling it again in the same process reuses the existing group (DeepSpeed keeps global
    state tied to it, so a group is never torn down and rebuilt within one process).
    """
    import deepspeed
    import torch

    env = resolve_dist_env(environ)
    os.environ.update(env.as_environ())
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend_for_device(), verbose=False)
    return env


def device_for(env: DistEnv):
    """The torch device this rank computes on."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", env.local_rank % torch.cuda.device_count())
    return torch.device("cpu")
