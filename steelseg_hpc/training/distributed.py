"""Who am I in the job: rank, world size and rendezvous, from torchrun, SLURM or nothing.

DeepSpeed reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` and
falls back to MPI without them, even for a single process. :func:`setup_distributed` resolves them
from whichever launcher started us and exports them before DeepSpeed starts. One rule serves
every launcher that is not torchrun:

- ``torchrun`` already sets all five;
- a submitit job (SLURM or local executor) and a plain ``srun`` get them from submitit's
  ``helpers.TorchDistributedEnvironment``: ranks from the job's task variables, the master is the
  first host of the job (loopback when the job has one node), the port is fixed by the job id
  (so every task can compute it) unless ``MASTER_PORT`` is set; a job of one task takes a port
  that is free right now instead (nobody has to agree on it, and a fixed port can be held by
  another job's connection on a shared node). A job of several tasks given a shared folder
  (:func:`setup_distributed` passes one in the run directory) agrees on a port that is free on
  the master host: rank 0 checks the job id's port there, takes a free one if it is held, and
  publishes it in the folder for the other ranks (see :func:`agree_on_port`);
- a plain ``python`` process on a laptop is rank 0 of 1 on a free local port.

Example:
    >>> env = resolve_dist_env({"SLURM_PROCID": "1", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1",
    ...                         "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_NODELIST": "gpu[07-08]",
    ...                         "SLURM_JOB_ID": "1234"})
    >>> (env.rank, env.world_size, env.local_rank, env.master_addr, env.launcher)
    (1, 4, 1, 'gpu07', 'slurm')
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from steelseg_hpc.core.errors import SteelsegError, TrainingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    """One process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str  # "torchrun", "slurm", "local" (submitit's local executor) or "single"

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


def free_port() -> int:
    """A TCP port that is free on this host right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a listener could bind ``port`` on every interface of this host right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
        return True


def _attempt_key(environ: Mapping[str, str]) -> str | None:
    """Names this attempt of this job (a requeued job is a new attempt), or None outside a job."""
    job = environ.get("SLURM_JOB_ID") or environ.get("SUBMITIT_LOCAL_JOB_ID")
    if not job:
        return None
    step = environ.get("SLURM_STEP_ID", "0")
    return f"{job}.{step}.{environ.get('SLURM_RESTART_COUNT', '0')}"


def agree_on_port(env: DistEnv, folder: Path, environ: Mapping[str, str], timeout_s: float = 300.0) -> DistEnv:
    """The same rendezvous with a port every rank agrees on and that is free on the master host.

    Rank 0 runs on the master host (the first host of the job), so it alone can tell whether the
    job id's port is free there; it publishes the port it chose in ``folder`` (shared by every
    node, like the run directory) under a name of this job attempt, and the other ranks wait for
    that file. ``MASTER_PORT`` in the environment, a job of one rank, or a process outside a job
    keep the port they have.

    Example:
        >>> import tempfile
        >>> env = DistEnv(0, 2, 0, "127.0.0.1", free_port(), "slurm")
        >>> agreed = agree_on_port(env, Path(tempfile.mkdtemp()), {"SLURM_JOB_ID": "7"})
        >>> agreed.master_port > 0
        True

    Raises:
        TrainingError: rank 0 did not publish a port within ``timeout_s`` seconds.
    """
    key = _attempt_key(environ)
    if env.world_size == 1 or "MASTER_PORT" in environ or key is None or env.launcher == "torchrun":
        return env
    published = Path(folder) / f"port-{key}"
    if env.rank == 0:
        port = env.master_port if port_is_free(env.master_port) else free_port_on_all_interfaces()
        if port != env.master_port:
            log.info("the job id's port %d is held on %s; the ranks meet on port %d", env.master_port,
                     socket.gethostname(), port)
        published.parent.mkdir(parents=True, exist_ok=True)
        for stale in published.parent.glob("port-*"):  # earlier attempts of this or older jobs
            stale.unlink(missing_ok=True)
        staging = published.with_name(f".{published.name}.{os.getpid()}")
        staging.write_text(str(port))
        staging.replace(published)
        return _with_port(env, port)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            text = published.read_text().strip()
        except FileNotFoundError:
            text = ""
        if text:
            return _with_port(env, int(text))
        if time.monotonic() > deadline:
            raise TrainingError(f"rank {env.rank} waited {timeout_s:.0f} s for rank 0 to publish the rendezvous "
                                f"port in {published}; is the run directory on a filesystem every node shares?")
        time.sleep(0.2)


def free_port_on_all_interfaces() -> int:
    """A TCP port free on every interface of this host right now (other hosts connect to it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _with_port(env: DistEnv, port: int) -> DistEnv:
    return DistEnv(env.rank, env.world_size, env.local_rank, env.master_addr, port, env.launcher)


@contextlib.contextmanager
def _process_environ(environ: Mapping[str, str]) -> Iterator[None]:
    """Let submitit (which reads ``os.environ``) see ``environ`` for the duration of the block."""
    if environ is os.environ:
        yield
        return
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _from_scheduler(environ: Mapping[str, str]) -> DistEnv:
    """Rank and rendezvous of a submitit or plain SLURM task, by submitit's own rule."""
    import submitit

    overlay = dict(environ)
    overlay.setdefault("SUBMITIT_EXECUTOR", "slurm")  # a plain srun task is a SLURM job too
    with _process_environ(overlay):
        dist = submitit.helpers.TorchDistributedEnvironment()
        single_node = dist.local_world_size == dist.world_size
        launcher = "slurm" if overlay["SUBMITIT_EXECUTOR"] == "slurm" else overlay["SUBMITIT_EXECUTOR"]
    port = dist.master_port
    if dist.world_size == 1 and "MASTER_PORT" not in environ:
        port = free_port()
    return DistEnv(rank=dist.rank, world_size=dist.world_size, local_rank=dist.local_rank,
                   # one node: loopback works even where the host name does not resolve
                   master_addr="127.0.0.1" if single_node else dist.master_addr,
                   master_port=port, launcher=launcher)


def resolve_dist_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Work out rank, world size and rendezvous from the environment (nothing is exported)."""
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
    if environ.get("SUBMITIT_EXECUTOR") or ("SLURM_PROCID" in environ and "SLURM_NTASKS" in environ):
        return _from_scheduler(environ)
    return DistEnv(0, 1, 0, "127.0.0.1", int(environ.get("MASTER_PORT", 0)) or free_port(), "single")


def backend_for_device() -> str:
    """NCCL when CUDA GPUs are present, gloo on the CPU."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def import_deepspeed():
    """DeepSpeed, imported with its accelerator named and without CPU-only op builds.

    Named, because DeepSpeed otherwise guesses the accelerator and warns about the guess on every
    start. On the CPU, DeepSpeed JIT-compiles a shared-memory all-reduce kernel on first use
    (about a minute on a fresh machine, for the demo and every CI run); gloo's own all-reduce is
    all the CPU runs here need, so that optional kernel is reported as unavailable.
    """
    import torch

    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    import deepspeed
    import deepspeed.ops

    if os.environ["DS_ACCELERATOR"] == "cpu":
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    return deepspeed


def setup_distributed(environ: Mapping[str, str] | None = None, rendezvous_dir: Path | None = None) -> DistEnv:
    """Export the rendezvous variables, pick the device and start the process group once.

    Args:
        environ: where to read the launcher's variables (``os.environ`` by default).
        rendezvous_dir: a folder every rank sees (e.g. in the run directory) where the ranks of a
            job agree on a free port (:func:`agree_on_port`); without it they use the job id's.

    Calling it again in the same process reuses the existing group (DeepSpeed keeps global
    state tied to it, so a group is never torn down and rebuilt within one process).
    """
    import torch

    deepspeed = import_deepspeed()

    environ = os.environ if environ is None else environ
    env = resolve_dist_env(environ)
    if rendezvous_dir is not None and not torch.distributed.is_initialized():
        env = agree_on_port(env, rendezvous_dir, environ)
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


def several_ranks() -> bool:
    """Whether this process is one rank of a process group of more than one."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a one-rank run)."""
    import torch.distributed as dist

    if several_ranks():
        dist.barrier()


def broadcast(value):
    """Rank 0's ``value`` on every rank (any picklable object)."""
    import torch.distributed as dist

    if not several_ranks():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def on_main(env: DistEnv, action) -> None:
    """Run ``action`` on rank 0 only; a user error it raises is raised on every rank.

    Rank 0 alone writes the run directory; the other ranks must not wait at a barrier for a
    rank that has given up, so the outcome is broadcast.
    """
    outcome = None
    if env.is_main:
        try:
            action()
        except SteelsegError as exc:
            outcome = (type(exc), str(exc))
    outcome = broadcast(outcome)
    if outcome is not None:
        raise outcome[0](outcome[1])


def any_rank(flag: bool, device) -> bool:
    """Whether ``flag`` is set on any rank (every rank must call it)."""
    import torch
    import torch.distributed as dist

    if not several_ranks():
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def mean_across_ranks(values: list[float], device) -> list[float]:
    """The mean of each value over the ranks (every rank must call it)."""
    import torch
    import torch.distributed as dist

    if not several_ranks():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return (tensor / dist.get_world_size()).tolist()


def average_batchnorm_statistics(module) -> None:
    """Give every rank the mean over ranks of its BatchNorm running statistics (every rank calls it).

    Without SyncBatchNorm each rank's running mean and variance follow its own tiles, and
    DeepSpeed does not broadcast buffers; so each rank would validate its shard with other
    statistics and a checkpoint (rank 0's module) would hold only rank 0's. Averaging before
    validation and before every checkpoint makes validation use the statistics the checkpoint
    keeps, so a resumed run validates as an uninterrupted one would: the running statistics are
    exponential averages, linear in their updates, so averaging now or later gives the same.
    """
    import torch
    import torch.distributed as dist

    if not several_ranks():
        return
    buffers = [buffer for layer in module.modules()
               if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) and layer.track_running_stats
               for buffer in (layer.running_mean, layer.running_var) if buffer is not None]
    if not buffers:
        return
    flat = torch.cat([buffer.detach().reshape(-1).double() for buffer in buffers])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for buffer in buffers:
        buffer.copy_(flat[offset:offset + buffer.numel()].view_as(buffer))
        offset += buffer.numel()
