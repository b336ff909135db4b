"""Helpers for the training tests: run the CLI or a script in a fresh process, tiny settings.

Training runs go to subprocesses because DeepSpeed keeps process-wide state tied to the process
group, and the test process must stay free of one for the other stages' tests.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Tiny, fast settings: a 4-channel UNet 3+, 12 tiles per epoch (3 optimiser steps of 2 x 2),
# no loader workers, no warm-up, a high learning rate so the loss visibly falls in 3 epochs.
# Precision "auto": bf16 where this CPU computes it natively, fp32 where bf16 would be ~16x slower
# (AVX2 only); the tests about bf16 itself ask for it (BF16 below).
TINY_UNET = [
    "--arch", "unet3plus", "--epochs", "3", "--batch-size", "2", "--lr", "0.01",
    "--zero-stage", "2", "--precision", "auto",
    "--set", "model.base_channels=4", "--set", "data.num_workers=0", "--set", "data.max_train_tiles=12",
    "--set", "grad_accumulation=2", "--set", "schedule.warmup_epochs=0", "--set", "progress=false",
]
BF16 = ["--precision", "bf16"]
TINY_SAM = [
    "--arch", "sam-lora", "--epochs", "2", "--batch-size", "2", "--lr", "0.005",
    "--zero-stage", "2", "--precision", "auto",
    "--set", "model.variant=tiny", "--set", "model.rank=4", "--set", "data.num_workers=0",
    "--set", "data.max_train_tiles=8", "--set", "grad_accumulation=2", "--set", "progress=false",
]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID"):
        env.pop(name, None)
    return env


CLI = [sys.executable, "-c", "from steelseg_hpc.cli import main; main()"]


def run_cli(args: list[str], timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """``steelseg-hpc ARGS`` in a fresh one-thread process."""
    result = subprocess.run(CLI + args, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def run_torchrun(args: list[str], nproc: int = 2, timeout: float = 400) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node N --no-python steelseg-hpc`` with ARGS (gloo on the CPU)."""
    from steelseg_hpc.training.distributed import free_port

    script = Path(sys.executable).parent / "steelseg-hpc"  # the installed console script
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(free_port()), "--no-python", str(script), *args]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def read_metrics(run_dir: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


