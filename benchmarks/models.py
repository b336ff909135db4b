"""Side-by-side training-step cost of the CNN zoo, relative to the paper-faithful ``unet3plus``.

Every architecture, the conv-then-resample skip order and the GLU candidates (docs/models.md) are
built once and timed in interleaved rounds (one fwd+bwd step each per round), so a load spike on a
shared machine hits all of them alike; the step time is the minimum over rounds, the usual
estimator when other processes can only slow a run down. Peak memory is measured in one extra
step per model (CPU: live tensor bytes, CUDA: max_memory_allocated; see profiling.py).

Usage::

    python benchmarks/models.py                 # CPU default: width 8, 64 px, batch 2 (~1-2 min)
    python benchmarks/models.py --json          # {"archs": {name: {params, gflops, step_ratio, mem_ratio}}}
    python benchmarks/models.py --paper --device cuda --bf16 --channels-last   # 800 px, width 64
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

from steelseg_hpc.models import architectures, build_model  # noqa: E402
from steelseg_hpc.models.naive_glu import with_naive_glu  # noqa: E402
from steelseg_hpc.models.profiling import (  # noqa: E402
    count_parameters,
    forward_gflops,
    measure_step,
)

BASELINE = "unet3plus"
# (label, registry name, options, naive GLU block or None): the zoo, the efficiency variant, then
# the GLU candidates; the naive blocks are no model option, so they are swapped in after the build.
CNNS = [arch.name for arch in architectures() if arch.width_option == "base_channels"]
VARIANTS = [(name, name, {}, None) for name in CNNS] + [
    ("unet3plus[conv-then-resample]", "unet3plus", {"skip_order": "conv-then-resample"}, None),
    ("unet3plus-enhanced-glu[full]", "unet3plus-enhanced-glu", {"glu_mode": "full"}, None),
    ("unet3plus-enhanced-glu[split]", "unet3plus-enhanced-glu", {}, "split"),
    ("unet3plus-enhanced-glu[dropin]", "unet3plus-enhanced-glu", {}, "dropin"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--base-channels", type=int, default=8)
    parser.add_argument("--paper", action="store_true", help="width 64, 800 px tiles, batch 8")
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (1 is the steadiest on a shared machine)")
    parser.add_argument("--only", nargs="*", help="labels to run (the baseline is always run)")
    args = parser.parse_args(argv)
    if args.paper:
        args.base_channels, args.tile, args.batch = 64, 800, 8
    return args


def run(args: argparse.Namespace) -> dict[str, dict]:
    """Measure every variant; returns label -> raw figures."""
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    variants = [v for v in VARIANTS if not args.only or v[0] in args.only or v[0] == BASELINE]
    device = torch.device(args.device)
    images = torch.randn(args.batch, 1, args.tile, args.tile, device=device)
    masks = torch.randint(0, 3, (args.batch, args.tile, args.tile), device=device)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    models, results = {}, {}
    for label, name, options, naive_glu in variants:
        torch.manual_seed(0)
        model = build_model(name, base_channels=args.base_channels, **options)
        if naive_glu is not None:
            model = with_naive_glu(model, naive_glu)
        model = model.to(device)
        results[label] = {"params": count_parameters(model),
                          "gflops": forward_gflops(model, args.tile), "times": []}
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        _, results[label]["peak_bytes"] = measure_step(model, images, masks, bf16=args.bf16,
                                                       repeats=0, warmup=1)
        models[label] = model
    for _ in range(args.rounds):
        for label, model in models.items():
            step_s, _ = measure_step(model, images, masks, bf16=args.bf16, repeats=1, warmup=0,
                                     measure_memory=False)
            results[label]["times"].append(step_s)
    for figures in results.values():
        figures["step_s"] = min(figures.pop("times"))
    return results


def report(results: dict[str, dict], args: argparse.Namespace) -> dict:
    """The issue's JSON: ratios to the baseline, GFLOPs per tile (forward)."""
    base = results[BASELINE]
    return {"archs": {label: {"params": r["params"], "gflops": round(r["gflops"], 4),
                              "step_ratio": round(r["step_s"] / base["step_s"], 3),
                              "mem_ratio": round(r["peak_bytes"] / base["peak_bytes"], 3)}
                      for label, r in results.items()}}


def print_table(results: dict[str, dict], summary: dict, args: argparse.Namespace) -> None:
    print(f"batch {args.batch} x {args.tile}^2, width {args.base_channels}, {args.device}"
          f"{', bf16' if args.bf16 else ''}{', channels_last' if args.channels_last else ''}; "
          f"ratios vs {BASELINE}")
    print(f"{'architecture':34s} {'params':>11s} {'GFLOPs':>9s} {'step s':>8s} {'tiles/s':>8s} "
          f"{'step x':>7s} {'peak MiB':>9s} {'mem x':>6s}")
    for label, r in results.items():
        s = summary["archs"][label]
        print(f"{label:34s} {r['params']:>11,d} {r['gflops']:>9.3f} {r['step_s']:>8.3f} "
              f"{args.batch / r['step_s']:>8.2f} {s['step_ratio']:>7.2f} "
              f"{r['peak_bytes'] / 2**20:>9.1f} {s['mem_ratio']:>6.2f}")
    glu, enhanced = results.get("unet3plus-enhanced-glu"), results.get("unet3plus-enhanced")
    if glu and enhanced:
        print(f"Enhanced* / Enhanced step time: {glu['step_s'] / enhanced['step_s']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    results = run(args)
    summary = report(results, args)
    if args.json:
        print(json.dumps(summary))
    else:
        print_table(results, summary, args)
        print(f"({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
