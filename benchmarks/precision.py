"""Training throughput with ``precision = auto`` vs ``fp32`` vs ``bf16`` on this machine.

Usage:
    python benchmarks/precision.py [--json] [--arch unet3plus] [--base-channels 8] [--tile 128]

One process builds three engines (DeepSpeed ZeRO-2, the real loss, the engine's epoch loop) on the
same model, random tiles held in memory and batch sizes, one per precision, and times their epochs
alternately (best of ``--rounds``, so load drifts hit all three). ``auto`` resolves as a run would
on this machine (bf16 where the CPU or GPU computes it natively, else fp32); the JSON says which
and why. Target: ``auto_vs_best`` >= 0.95, i.e. auto picks the faster precision.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

PRECISIONS = ("auto", "fp32", "bf16")


def epoch_runner(args, precision: str):
    import torch
    from torch.utils.data import TensorDataset

    from steelseg_hpc.models.metrics import SegmentationMetrics
    from steelseg_hpc.training.config import load_run_config
    from steelseg_hpc.training.data_loading import build_loaders
    from steelseg_hpc.training.distributed import setup_distributed
    from steelseg_hpc.training.engine import build_engine
    from steelseg_hpc.training.loop import train_one_epoch
    from steelseg_hpc.training.precision import resolve_precision
    from steelseg_hpc.training.progress import EpochProgress

    config = load_run_config(None, [f"model.base_channels={args.base_channels}", "data.num_workers=0",
                                    "progress=false", "noise_scale.enabled=false",
                                    f"micro_batch={args.micro_batch}", "grad_accumulation=1"],
                             arch=args.arch, precision=precision, zero_stage=2)
    env = setup_distributed()
    generator = torch.Generator().manual_seed(0)
    tiles = args.steps * args.micro_batch
    data = TensorDataset(torch.rand(tiles, 1, args.tile, args.tile, generator=generator),
                         torch.randint(0, 3, (tiles, args.tile, args.tile), generator=generator))
    loaders = build_loaders(config, env.rank, env.world_size, train_set=data, val_set=data)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    choice = resolve_precision(precision, device.type)
    engine, _ = build_engine(config, env, 3, loaders.steps_per_epoch, choice.resolved)
    metrics = SegmentationMetrics(3).to(engine.device)
    epochs = iter(range(1, 10**6))

    def run_epoch() -> float:
        with EpochProgress(enabled=False) as progress:
            stats = train_one_epoch(engine, loaders, next(epochs), metrics, engine.device, None, progress, 1)
        return stats["tiles_per_s"]

    return run_epoch, choice


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--arch", default="unet3plus")
    parser.add_argument("--base-channels", type=int, default=8)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="optimiser steps per timed epoch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    from steelseg_hpc.training.log_capture import ThirdPartyLogs

    with ThirdPartyLogs():  # DeepSpeed writes to stdout, which is for the result alone
        return report(args)


def report(args) -> dict:
    runners = {precision: epoch_runner(args, precision) for precision in PRECISIONS}
    for run_epoch, _ in runners.values():
        run_epoch()  # warm-up: first-use kernel set-up is not throughput
    rates: dict[str, list[float]] = {precision: [] for precision in PRECISIONS}
    for _ in range(args.rounds):
        for precision, (run_epoch, _) in runners.items():
            rates[precision].append(run_epoch())
    best = {precision: max(values) for precision, values in rates.items()}
    auto = runners["auto"][1]
    import torch

    result = {
        "auto_resolves_to": auto.resolved, "auto_reason": auto.reason,
        "tiles_per_s": {precision: round(rate, 2) for precision, rate in best.items()},
        "bf16_vs_fp32": round(best["bf16"] / best["fp32"], 3),
        "auto_vs_best": round(best["auto"] / max(best["fp32"], best["bf16"]), 3),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "setup": {k: getattr(args, k) for k in ("arch", "base_channels", "tile", "micro_batch", "steps", "rounds")},
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"auto -> {auto.resolved} ({auto.reason})")
        for precision in PRECISIONS:
            print(f"  {precision:>5}: {best[precision]:7.2f} tiles/s")
        print(f"bf16/fp32 {result['bf16_vs_fp32']:.2f}x; auto/best {result['auto_vs_best']:.2f}x (target >= 0.95)")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
