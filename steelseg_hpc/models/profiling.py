"""What an architecture costs: parameters, GFLOPs per tile, step time and peak training memory.

Peak memory of one forward + backward step is measured where it runs:

- CUDA: ``torch.cuda.max_memory_allocated`` (the caching allocator's own high-water mark).
- CPU: the high-water mark of *live tensor storage bytes*, tracked by a ``TorchDispatchMode``
  that sees every op the step runs (backward included) and weak-references each output's
  storage. We do not use RSS (it includes the allocator's cached and fragmented pages, the
  Python heap and mkldnn scratch, and glibc rarely returns freed pages, so it drifts with
  whatever ran before) nor tracemalloc (it only sees Python's allocator, never ATen's). The
  tracker counts exactly the tensors a GPU would also hold (parameters, activations saved for
  backward, gradients, temporaries between ops), so CPU and CUDA figures are comparable; it
  misses scratch space inside a single kernel. Optimizer state is excluded (it depends on the
  optimizer and on ZeRO sharding, not on the architecture).

Example:
    >>> p = profile_architecture("unet3plus", tile=32, batch=1, base_channels=4, repeats=1)
    >>> p.params > 0 and p.gflops > 0 and p.peak_bytes > 0
    True
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.models import architecture, build_model


@dataclass(frozen=True)
class ArchProfile:
    """One architecture's costs at one tile size and batch (times in seconds, memory in bytes)."""

    name: str
    params: int
    gflops: float  # forward GFLOPs for one tile (1 FLOP = one multiply or one add)
    step_s: float | None  # median fwd+bwd time for the whole batch, None if not timed
    peak_bytes: int | None  # peak training memory of one step, None if not measured

    def as_dict(self) -> dict[str, Any]:
        """The profile as a JSON-ready dict."""
        return asdict(self)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameter count.

    Example:
        >>> count_parameters(nn.Conv2d(1, 2, 3))
        20
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def forward_gflops(model: nn.Module, tile: int, in_channels: int = 1) -> float:
    """Forward GFLOPs for one ``tile`` x ``tile`` image (convolutions and matmuls, by FlopCounterMode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, in_channels, tile, tile, device=device))
    model.train(was_training)
    return counter.get_total_flops() / 1e9


class LiveTensorBytes(TorchDispatchMode):
    """Track the high-water mark of live tensor storage bytes created while the mode is active."""

    def __init__(self, baseline_bytes: int = 0) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = self.peak = baseline_bytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # Drop storages that died during this op before adding its outputs: a freed storage's
        # address can be reused by a new one.
        for key in [k for k, (ref, _) in self._live.items() if ref.expired()]:
            self.current -= self._live.pop(key)[1]
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                storage = leaf.untyped_storage()
                key = storage._cdata
                if key not in self._live:
                    self._live[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


def _train_step(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, bf16: bool) -> None:
    """One forward + backward with cross-entropy (the anchors' loss), gradients cleared first."""
    model.zero_grad(set_to_none=True)
    autocast = torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16)
    with autocast:
        logits = model(images)
        outputs = logits if isinstance(logits, list) else [logits]
        loss = sum(F.cross_entropy(o.float(), masks) for o in outputs)
    loss.backward()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _training_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.train()
    try:
        yield
    finally:
        model.train(was_training)


def measure_step(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, *, bf16: bool = False,
                 repeats: int = 3, warmup: int = 1, measure_memory: bool = True,
                 ) -> tuple[float | None, int | None]:
    """Median fwd+bwd seconds over ``repeats`` and peak bytes of one step.

    ``repeats=0`` skips timing; memory is measured in its own (untimed) step because the CPU
    tracker slows every op down.
    """
    device = images.device
    step_s = peak = None
    with _training_mode(model):
        for _ in range(warmup):
            _train_step(model, images, masks, bf16)
        if repeats > 0:
            times = []
            for _ in range(repeats):
                _synchronize(device)
                start = time.perf_counter()
                _train_step(model, images, masks, bf16)
                _synchronize(device)
                times.append(time.perf_counter() - start)
            step_s = statistics.median(times)
        if measure_memory:
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                _train_step(model, images, masks, bf16)
                peak = torch.cuda.max_memory_allocated(device)
            else:
                resident = sum(t.untyped_storage().nbytes()
                               for t in [*model.parameters(), *model.buffers(), images, masks])
                tracker = LiveTensorBytes(resident)
                with tracker:
                    _train_step(model, images, masks, bf16)
                peak = tracker.peak
        model.zero_grad(set_to_none=True)
    return step_s, peak


def profile_architecture(name: str, *, tile: int = 64, batch: int = 2,
                         base_channels: int | None = None,
                         in_channels: int = 1, num_classes: int = 3, device: str = "cpu",
                         bf16: bool = False, channels_last: bool = False, repeats: int = 3,
                         measure_memory: bool = True, label: str | None = None,
                         **options: Any) -> ArchProfile:
    """Build ``name`` (plus ``options``) and measure its costs at ``batch`` x ``tile``^2.

    ``base_channels=None`` keeps the architecture's default width (the paper's).

    Example:
        >>> profile_architecture("elunet", tile=32, batch=1, base_channels=4, repeats=0,
        ...                      measure_memory=False).step_s is None
        True
    """
    torch.manual_seed(0)
    if base_channels is not None:
        options["base_channels"] = base_channels
    model = build_model(name, in_channels=in_channels, num_classes=num_classes,
                        **options).to(device)
    gflops = forward_gflops(model, tile, in_channels)
    images = torch.randn(batch, in_channels, tile, tile, device=device)
    masks = torch.randint(0, num_classes, (batch, tile, tile), device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    step_s, peak = measure_step(model, images, masks, bf16=bf16, repeats=repeats,
                                measure_memory=measure_memory)
    return ArchProfile(label or name, count_parameters(model), gflops, step_s, peak)


def check_device(device: str) -> torch.device:
    """The torch device ``device`` names, or a ConfigError saying why this machine cannot use it.

    Example:
        >>> check_device("cpu")
        device(type='cpu')
        >>> check_device("gpu0")
        Traceback (most recent call last):
        steelseg_hpc.core.errors.ConfigError: device 'gpu0': expected cpu, cuda or cuda:N
    """
    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device {device!r}: expected cpu, cuda or cuda:N") from None
    if chosen.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise ConfigError(f"device {device!r}: torch sees no CUDA device on this machine")
        if chosen.index is not None and chosen.index >= count:
            raise ConfigError(f"device {device!r}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif chosen.type != "cpu":
        raise ConfigError(f"device {device!r}: expected cpu, cuda or cuda:N")
    return chosen


def profile_zoo(names: list[str], *, tile: int, batch: int, base_channels: int | None = None,
                device: str = "cpu", bf16: bool = False, repeats: int = 0,
                ) -> list[ArchProfile | tuple[str, str]]:
    """Profile each architecture; one that fails to build or run gives ``(name, error text)``.

    ``base_channels`` (None = each model's default, the paper width) only goes to the
    architectures that have a width option (the registry says which).

    Example:
        >>> [p.name for p in profile_zoo(["elunet"], tile=32, batch=1, base_channels=4)]
        ['elunet']
    """
    results: list[ArchProfile | tuple[str, str]] = []
    for name in names:
        width = architecture(name).width_option
        options = {width: base_channels} if base_channels and width else {}
        try:
            results.append(profile_architecture(name, tile=tile, batch=batch, device=device,
                                                bf16=bf16, repeats=repeats, **options))
        except (RuntimeError, ValueError) as exc:  # e.g. out of memory, a tile the model rejects
            results.append((name, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"))
    return results
