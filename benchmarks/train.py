"""Training-engine benchmark: engine vs a plain PyTorch loop, and ZeRO-2 vs ZeRO-0 peak memory.

Run ``python benchmarks/train.py [--json]``. In one run it measures

- ``engine_vs_plain``: best-of-N wall-clock tiles/s (epochs of the two loops alternate, so load
  drifts hit both) of the DeepSpeed engine's epoch loop (ZeRO-2, bf16 autocast, noise
  scale probes and metrics on) divided by tiles/s of a plain PyTorch loop (AdamW, bf16 autocast,
  the same model, loss, data and batch sizes), one process; the target is >= 0.95;
- ``zero2_vs_zero0_peak_mem``: peak memory per rank of ZeRO-2 divided by that of stage 0, two
  ranks under torchrun, 27 M-parameter UNet 3+ (``--memory-base-channels 64``); on the CPU
  "memory" is the resident-set peak during steady-state training (after the first optimiser step)
  minus the resident set just before the engine was built, so the import footprint cancels out.

Defaults are sized for a 2-core CPU (a few minutes); ``--base-channels 64 --tile 800`` on a GPU
gives the paper-width figure. Data are random tiles held in memory, so the loader is not measured.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def _config(args, zero_stage: int, extra: list[str] | None = None):
    from steelseg_hpc.training.config import load_run_config

    return load_run_config(None, [
        f"model.base_channels={args.base_channels}", "data.num_workers=0", "progress=false",
        f"grad_accumulation={args.accumulation}", f"micro_batch={args.micro_batch}",
        *(extra or []),
    ], arch=args.arch, zero_stage=zero_stage, precision="bf16")


def _dataset(args, tiles: int):
    import torch
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(tiles, 1, args.tile, args.tile, generator=generator)
    masks = torch.randint(0, 3, (tiles, args.tile, args.tile), generator=generator)
    return TensorDataset(images, masks)


def engine_epoch(args):
    """A function that trains one epoch through the engine's loop and returns its tiles/s."""
    from steelseg_hpc.models.metrics import SegmentationMetrics
    from steelseg_hpc.training.data_loading import build_loaders
    from steelseg_hpc.training.distributed import setup_distributed
    from steelseg_hpc.training.engine import build_engine
    from steelseg_hpc.training.loop import train_one_epoch
    from steelseg_hpc.training.noise_scale import GradientNoiseScale
    from steelseg_hpc.training.progress import EpochProgress

    config = _config(args, zero_stage=args.engine_stage, extra=args.set)
    env = setup_distributed()
    data = _dataset(args, args.steps * args.micro_batch * args.accumulation)
    loaders = build_loaders(config, env.rank, env.world_size, train_set=data, val_set=data)
    engine, _ = build_engine(config, env, 3, loaders.steps_per_epoch)
    metrics = SegmentationMetrics(3, ["a", "b", "c"]).to(engine.device)
    noise = GradientNoiseScale(config.micro_batch, config.micro_batch * config.grad_accumulation)
    epochs = iter(range(1, 10**6))

    def run_epoch() -> tuple[float, float]:
        cpu_start = time.process_time()
        with EpochProgress(enabled=False) as progress:
            stats = train_one_epoch(engine, loaders, next(epochs), metrics, engine.device, noise, progress, 1)
        tiles = stats["tiles_per_s"] * stats["train_seconds"]
        return stats["tiles_per_s"], tiles / (time.process_time() - cpu_start)

    return run_epoch


def plain_epoch(args):
    """The same epoch as a textbook loop: same model, loss, AdamW, bf16 autocast, accumulation."""
    import torch
    from torch.utils.data import DataLoader

    from steelseg_hpc.training.engine import build_loss, build_model_for_run

    config = _config(args, zero_stage=0, extra=args.set)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model_for_run(config, 3).to(device).train()
    loss_fn = build_loss(config, 3).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optimizer.lr,
                                  weight_decay=config.optimizer.weight_decay)
    data = _dataset(args, args.steps * args.micro_batch * args.accumulation)
    loader = DataLoader(data, batch_size=args.micro_batch, shuffle=True, drop_last=True)

    def run_epoch() -> tuple[float, float]:
        start, cpu_start, tiles = time.perf_counter(), time.process_time(), 0
        for index, (images, masks) in enumerate(loader):
            images, masks = images.to(device), masks.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                outputs = model(images)
            loss = loss_fn(outputs.float(), masks) / args.accumulation
            loss.backward()
            if (index + 1) % args.accumulation == 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            tiles += images.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        return tiles / (time.perf_counter() - start), tiles / (time.process_time() - cpu_start)

    return run_epoch


def throughput(args) -> dict[str, float]:
    """Best-of-``rounds`` tiles/s of engine and plain loop, timed alternately (fair under load).

    ``engine_vs_plain`` compares wall-clock rates. ``engine_vs_plain_cpu`` compares tiles per
    CPU-second of the process: steadier when other users load a shared machine, but it also
    charges the engine for its communication threads.
    """
    plain, engine = plain_epoch(args), engine_epoch(args)
    plain(), engine()  # warm-up
    plain_rates, engine_rates = [], []
    for _ in range(args.rounds):
        plain_rates.append(plain())
        engine_rates.append(engine())
    best = lambda rates, i: max(rate[i] for rate in rates)  # noqa: E731
    return {
        "engine_vs_plain": best(engine_rates, 0) / best(plain_rates, 0),
        "engine_vs_plain_cpu": best(engine_rates, 1) / best(plain_rates, 1),
        "engine_tiles_per_s": best(engine_rates, 0),
        "plain_tiles_per_s": best(plain_rates, 0),
    }


def memory_worker(args) -> None:
    """Run under torchrun: train a few steps at ``--stage``; rank 0 writes the mean RSS growth."""
    import torch
    import torch.distributed as dist

    from steelseg_hpc.training.distributed import setup_distributed
    from steelseg_hpc.training.engine import build_engine
    from steelseg_hpc.training.host_facts import peak_memory_mb, reset_peak_memory

    config = _config(args, zero_stage=args.stage, extra=args.set)
    env = setup_distributed()
    data = _dataset(args, 4 * args.micro_batch * args.accumulation)
    reset_peak_memory()
    before = peak_memory_mb()
    engine, _ = build_engine(config, env, 3, 2)
    for index in range(len(data) // args.micro_batch):
        if index == args.accumulation:
            # After one full step every buffer exists; what follows is the training steady state
            # (the one-off copies DeepSpeed makes while flattening parameters are left out).
            reset_peak_memory()
        images, masks = data[index * args.micro_batch:(index + 1) * args.micro_batch]
        loss, _ = engine(images.to(engine.device), masks.to(engine.device))
        engine.backward(loss)
        engine.step()
    growth = torch.tensor([peak_memory_mb() - before], dtype=torch.float64)
    dist.all_reduce(growth)
    if env.rank == 0:
        Path(args.out).write_text(json.dumps({"peak_growth_mb": float(growth) / env.world_size}))


def peak_memory_per_rank(args, stage: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mem.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                   "--master_port", str(29700 + stage), __file__, "--memory-worker", "--stage", str(stage),
                   "--out", str(out), "--arch", args.arch, "--base-channels", str(args.memory_base_channels),
                   "--tile", "32", "--micro-batch", "1", "--accumulation", "1",
                   *[f"--set={item}" for item in args.set]]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        subprocess.run(command, check=True, env=env, capture_output=True, text=True)
        return json.loads(out.read_text())["peak_growth_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--arch", default="unet3plus")
    parser.add_argument("--base-channels", type=int, default=8)
    parser.add_argument("--memory-base-channels", type=int, default=64,
                        help="width for the memory comparison (parameters dominate)")
    parser.add_argument("--tile", type=int, default=128,
                        help="tile size; the per-parameter engine overhead is fixed, so tiny tiles exaggerate it")
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--accumulation", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="optimiser steps per timed epoch")
    parser.add_argument("--engine-stage", type=int, default=2, help="ZeRO stage of the throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs of each loop, alternated")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="run-config override for every measurement (repeatable)")
    parser.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        memory_worker(args)
        return
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    # DeepSpeed prints to stdout (op builds, warnings); keep stdout for the result alone.
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        speed = throughput(args)
        zero0 = peak_memory_per_rank(args, 0)
        zero2 = peak_memory_per_rank(args, 2)
    finally:
        sys.stdout.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)
    result = {
        "engine_vs_plain": speed["engine_vs_plain"],
        "zero2_vs_zero0_peak_mem": zero2 / zero0,
        **{k: v for k, v in speed.items() if k != "engine_vs_plain"},
        "zero0_peak_mb_per_rank": zero0, "zero2_peak_mb_per_rank": zero2,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "setup": {k: getattr(args, k) for k in ("arch", "base_channels", "memory_base_channels", "tile",
                                                 "micro_batch", "accumulation", "steps", "rounds", "engine_stage")},
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"engine {speed['engine_tiles_per_s']:.1f} tiles/s vs plain {speed['plain_tiles_per_s']:.1f} tiles/s; "
          f"{result['engine_vs_plain']:.3f}x (target >= 0.95; by CPU time {speed['engine_vs_plain_cpu']:.3f}x)")
    print(f"peak memory per rank at 2 ranks: ZeRO-0 {zero0:.0f} MiB, ZeRO-2 {zero2:.0f} MiB: "
          f"{result['zero2_vs_zero0_peak_mem']:.3f}x")


if __name__ == "__main__":
    main()
