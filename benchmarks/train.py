"""Training-engine benchmark: engine vs a plain PyTorch loop, and ZeRO-2 vs ZeRO-0 peak memory.

Run ``python benchmarks/train.py [--json]``. In one run it measures

- ``engine_vs_plain``: best-of-N wall-clock tiles/s of training steps (epochs of the two loops
  alternate, so load drifts hit both) of a real run of the training engine (``train()``: the
  Trainer with ZeRO-2, bf16 autocast, noise-scale probes and metrics on, every check a run gets)
  divided by tiles/s of a plain PyTorch loop (AdamW, bf16 autocast, the same model, loss,
  loader and batch sizes), one process; the target is >= 0.95;
- ``zero2_vs_zero0_peak_mem``: peak memory per rank of ZeRO-2 divided by that of stage 0, two
  ranks under torchrun, 27 M-parameter UNet 3+ (``--memory-base-channels 64``); on the CPU
  "memory" is the resident-set peak during steady-state training (after the first optimiser step)
  minus the resident set just before ``train()`` started, so the import footprint cancels out.

The engine is driven through ``train()`` with Trainer hooks: the step hook timestamps every
optimiser step (a rate excludes each epoch's first step, as the plain loop's does) and the epoch
hook runs one plain epoch on the trainer's own training loader, so both loops read the same tiles
(of a small synthetic store made in a temporary folder) in the same order of machine load.

Defaults are sized for a 2-core CPU (a few minutes); ``--base-channels 64 --tile 800`` on a GPU
gives the paper-width figure.
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


def _store(folder: Path, args, tiles: int) -> str:
    """A synthetic store with at least ``tiles`` training tiles of ``args.tile`` pixels."""
    from steelseg_hpc.data import load_spec, make_synthetic_dataset, prepare

    per_image = 8  # a 2x2 grid of tiles per image, no overlap, and one augmented copy of each
    images = max(2, -(-tiles // per_image))
    spec = make_synthetic_dataset(folder / "raw", groups=(images + 3,), size=(2 * args.tile, 2 * args.tile),
                                  seed=0, tile_size=args.tile, stride=args.tile, copies=1, force=True)
    store = folder / "store.zarr"
    prepare(load_spec(spec), store, workers=0)
    return str(store)


class StepClock:
    """A step hook: the wall and CPU time of each optimiser step's end, per epoch."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __call__(self, trainer, loss: float) -> None:
        if trainer.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def rates(self, tiles_per_step: int) -> tuple[float, float]:
        """Tiles per wall-second and per CPU-second after the first step; the clock restarts."""
        steps = len(self.wall) - 1
        if steps < 1:
            raise SystemExit("benchmarks/train.py: --steps must be at least 2 (the first step is not timed)")
        rates = (steps * tiles_per_step / (self.wall[-1] - self.wall[0]),
                 steps * tiles_per_step / (self.cpu[-1] - self.cpu[0]))
        self.wall, self.cpu = [], []
        return rates


class PlainLoop:
    """The same training as a textbook loop: same model, loss, AdamW, bf16 autocast, accumulation."""

    def __init__(self, trainer, accumulation: int):
        import torch

        from steelseg_hpc.training.engine import build_loss, build_model_for_run

        config, classes = trainer.config, trainer.weights_meta.num_classes
        self.device, self.loader, self.accumulation = trainer.device, trainer.loaders.train, accumulation
        self.model = build_model_for_run(config, classes).to(self.device).train()
        self.loss_fn = build_loss(config, classes).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.optimizer.lr,
                                           weight_decay=config.optimizer.weight_decay)
        self.grad_clip, self.clock = config.grad_clip, StepClock()

    def epoch(self, trainer) -> tuple[float, float]:
        import torch

        tiles_per_step = 0
        for index, (images, masks) in enumerate(self.loader):
            images, masks = images.to(self.device), masks.to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                outputs = self.model(images)
            loss = self.loss_fn(outputs.float(), masks) / self.accumulation
            loss.backward()
            tiles_per_step += images.shape[0]
            if (index + 1) % self.accumulation == 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.clock(trainer, float(loss))
                per_step, tiles_per_step = tiles_per_step, 0
        return self.clock.rates(per_step)


def throughput(args) -> dict[str, float]:
    """Best-of-``rounds`` tiles/s of engine and plain loop, timed alternately (fair under load).

    ``engine_vs_plain`` compares wall-clock rates. ``engine_vs_plain_cpu`` compares tiles per
    CPU-second of the process: steadier when other users load a shared machine, but it also
    charges the engine for its communication threads. The first epoch of each is a warm-up.
    """
    from steelseg_hpc.training import TrainerHooks, train

    tiles_per_step = args.micro_batch * args.accumulation
    engine_clock, plain_rates, engine_rates = StepClock(), [], []
    plain: list[PlainLoop] = []
    probes: list[bool] = []

    def after_epoch(trainer, row) -> None:
        probes.append(row.noise_scale_b_simple is not None)
        engine_rates.append(engine_clock.rates(tiles_per_step))
        if not plain:
            plain.append(PlainLoop(trainer, args.accumulation))
        plain_rates.append(plain[0].epoch(trainer))

    with tempfile.TemporaryDirectory() as tmp:
        tiles = args.steps * tiles_per_step
        config = _config(args, zero_stage=args.engine_stage, extra=[
            f"data.store={_store(Path(tmp), args, tiles)}", f"data.max_train_tiles={tiles}",
            f"epochs={args.rounds + 1}", "patience=0", "keep_checkpoints=1", *args.set])
        train(config, Path(tmp) / "run", hooks=TrainerHooks(on_step_end=(engine_clock,), on_epoch_end=(after_epoch,)))
    best = lambda rates, i: max(rate[i] for rate in rates[1:])  # noqa: E731
    return {
        "engine_vs_plain": best(engine_rates, 0) / best(plain_rates, 0),
        "engine_vs_plain_cpu": best(engine_rates, 1) / best(plain_rates, 1),
        "engine_tiles_per_s": best(engine_rates, 0),
        "plain_tiles_per_s": best(plain_rates, 0),
        # The engine's own rule (two batch sizes, ZeRO stage < 3) decides, as in any run.
        "noise_scale_measured": all(probes),
    }


def memory_worker(args) -> None:
    """Run under torchrun: train a few steps at ``--stage``; rank 0 writes the mean RSS growth."""
    import torch
    import torch.distributed as dist

    from steelseg_hpc.training import TrainerHooks, train
    from steelseg_hpc.training.host_facts import peak_memory_mb, reset_peak_memory

    steps = {"n": 0, "peak": 0.0}

    def after_step(trainer, loss: float) -> None:
        steps["n"] += 1
        if steps["n"] == 1:
            # After one full step every buffer exists; what follows is the training steady state
            # (the one-off copies DeepSpeed makes while flattening parameters are left out).
            reset_peak_memory()
        else:
            steps["peak"] = peak_memory_mb()  # training steps only: not validation, not the checkpoint

    config = _config(args, zero_stage=args.stage, extra=[
        f"data.store={args.store}", f"data.max_train_tiles={4 * args.micro_batch * args.accumulation * 2}",
        "epochs=1", "noise_scale.enabled=false", *args.set])
    reset_peak_memory()
    before = peak_memory_mb()
    train(config, Path(args.out).parent / f"run-{args.stage}", hooks=TrainerHooks(on_step_end=(after_step,)))
    growth = torch.tensor([steps["peak"] - before], dtype=torch.float64)
    dist.all_reduce(growth)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(args.out).write_text(json.dumps({"peak_growth_mb": float(growth) / int(os.environ["WORLD_SIZE"])}))


def peak_memory_per_rank(args, stage: int) -> float:
    from steelseg_hpc.training.distributed import free_port

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mem.json"
        small = argparse.Namespace(**{**vars(args), "tile": 32})
        store = _store(Path(tmp), small, 16)
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                   "--master_port", str(free_port()), __file__, "--memory-worker", "--stage", str(stage),
                   "--out", str(out), "--store", store, "--arch", args.arch,
                   "--base-channels", str(args.memory_base_channels), "--tile", "32", "--micro-batch", "1",
                   "--accumulation", "1", *[f"--set={item}" for item in args.set]]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"benchmarks/train.py: the ZeRO-{stage} memory run failed:\n{done.stderr[-3000:]}")
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
    parser.add_argument("--store", help=argparse.SUPPRESS)
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
