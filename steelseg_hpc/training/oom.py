"""What to say when a training step runs out of memory: where, at what batch, and what to change.

Example:
    >>> from steelseg_hpc.training.config import load_run_config
    >>> config = load_run_config(None, ["micro_batch=8", "grad_accumulation=2"], arch="unet3plus")
    >>> print(out_of_memory_advice(config, torch.OutOfMemoryError("CUDA out of memory.")))  # doctest: +ELLIPSIS
    out of memory at micro_batch 8 (global batch 16 on 1 rank(s)): ... --set micro_batch=4 --set grad_accumulation=4 ...
"""
from __future__ import annotations

import os

import torch

from steelseg_hpc.models import architecture
from steelseg_hpc.training.config import RunConfig


def is_out_of_memory(exc: BaseException) -> bool:
    """A GPU out-of-memory error, or the CPU allocator's failure to allocate."""
    return isinstance(exc, torch.OutOfMemoryError) or "can't allocate memory" in str(exc)


def out_of_memory_advice(config: RunConfig, exc: BaseException) -> str:
    """One line for a step that ran out of memory: where, at what batch, and what to change."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    micro, accumulation = config.micro_batch, config.grad_accumulation
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    steps = []
    if micro > 1:
        smaller = max(1, micro // 2)
        steps.append(f"--set micro_batch={smaller} --set grad_accumulation={accumulation * micro // smaller}"
                     " (the same global batch)")
    if not config.model.options().get("activation_checkpointing") and architecture(config.model.name).family != "sam":
        steps.append("--set model.activation_checkpointing=true")
    if config.precision == "fp32":
        steps.append("--set precision=bf16 (where the GPU has it)")
    if config.zero_stage < 3:
        steps.append("--set zero_stage=3")
    return (f"out of memory at micro_batch {micro} (global batch {micro * accumulation * world} on {world} "
            f"rank(s)): {first[:160]}. Checkpoints written so far are intact and the same command resumes; "
            f"first try " + "; or ".join(steps))
