"""Step time and peak memory of ``sam-lora`` training steps across LoRA ranks.

Default: the tiny SAM on the CPU, box prompts (4 boxes per tile), ranks 0/4/64/512, each
reported relative to rank 4. ``--json`` prints exactly
``{"ranks": {r: {"trainable": n, "step_ratio": s, "mem_ratio": m}}}``.

On the CPU, "memory" is the training state a step needs: trainable parameters' gradients
and AdamW moments, all parameters, and the tensors autograd saves for backward (each storage
counted once). On CUDA it is ``torch.cuda.max_memory_allocated`` for the step.

Examples:
    .venv/bin/python benchmarks/sam_lora.py --json                   # tiny, CPU, about a minute
    python benchmarks/sam_lora.py --variant vit_b --image-size 1024 --device cuda --bf16 \\
        --ranks 4 512 --batch-size 1      # against the H200 anchors (0.089 s/step at rank 512)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from steelseg_hpc.models import build_model  # noqa: E402

ANCHORS_H200 = (
    "H200 anchors (vit_b, 1024², bf16, 4 boxes): rank 512 b1 0.089 s 8.9 GiB; b4 0.258 s 33 GiB; "
    "rank 4 b1 0.096 s; goal >= 20 it/s at rank 512 b1"
)


def synthetic_batch(batch_size: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiles and masks with exactly four connected components: background and three squares."""
    masks = torch.zeros(batch_size, size, size, dtype=torch.long)
    step = size // 8
    for index, (row, col) in enumerate([(1, 1), (1, 5), (5, 3)]):
        masks[:, row * step : (row + 2) * step, col * step : (col + 2) * step] = 1 + index % 2
    tiles = 0.4 + 0.2 * masks[:, None].float() + 0.05 * torch.randn(batch_size, 1, size, size)
    return tiles.clamp(0, 1).to(device), masks.to(device)


class SavedTensorBytes:
    """Bytes of the distinct non-parameter storages autograd saves during a forward pass."""

    def __init__(self, parameters: list[torch.Tensor]) -> None:
        self.parameter_storages = {p.untyped_storage().data_ptr() for p in parameters}
        self.storages: dict[int, int] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.parameter_storages:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def total(self) -> int:
        return sum(self.storages.values())


class Trial:
    """One rank's model, optimizer and batch; :meth:`step` runs one timed training step."""

    def __init__(self, rank: int, args: argparse.Namespace) -> None:
        self.device = torch.device(args.device)
        torch.manual_seed(0)
        self.model = build_model(
            "sam-lora", num_classes=3, rank=rank, variant=args.variant, checkpoint=args.checkpoint,
            prompt=args.prompt, image_size=args.image_size,
        ).to(self.device).train()
        if args.compile:
            self.model.sam.image_encoder.compile()
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=1e-4)
        side = args.tile_size or self.model.sam.image_encoder.img_size
        self.tiles, self.masks = synthetic_batch(args.batch_size, side, self.device)
        self.bf16 = args.bf16
        self.times: list[float] = []

    def _loss(self) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss, _ = self.model.loss_and_logits(self.tiles, self.masks, lambda lg, tg: F.cross_entropy(lg, tg))
        return loss

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def step(self, timed: bool = True) -> None:
        self._sync()
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        self._loss().backward()
        self.optimizer.step()
        self._sync()
        if timed:
            self.times.append(time.perf_counter() - start)

    def peak_bytes(self) -> int:
        """Memory one training step of this model needs (see the module docstring)."""
        resident = sum(p.numel() * p.element_size() for p in self.model.parameters())
        resident += 2 * sum(p.numel() * p.element_size() for p in self.trainable)  # AdamW moments
        if self.device.type == "cuda":
            self.optimizer.zero_grad(set_to_none=True)
            self._sync()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            self.step(timed=False)
            return torch.cuda.max_memory_allocated() - before + resident
        saved = SavedTensorBytes(list(self.model.parameters()))
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda tensor: tensor):
            self._loss()
        gradients = sum(p.numel() * p.element_size() for p in self.trainable)
        return resident + gradients + saved.total


def measure(ranks: list[int], args: argparse.Namespace) -> dict[int, dict[str, float]]:
    """Per rank: trainable and total parameters, best-of-N seconds per step, peak bytes.

    Steps of the ranks are interleaved round by round, so load from other jobs on a shared
    host hits every rank alike; the best step of each is kept.
    """
    trials = {rank: Trial(rank, args) for rank in ranks}
    for trial in trials.values():
        for _ in range(args.warmup):
            trial.step(timed=False)
    for _ in range(args.steps):
        for trial in trials.values():
            trial.step()
    return {
        rank: {
            "trainable": sum(p.numel() for p in trial.trainable),
            "total": sum(p.numel() for p in trial.model.parameters()),
            "seconds": min(trial.times),
            "bytes": trial.peak_bytes(),
        }
        for rank, trial in trials.items()
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    parser.add_argument("--ranks", type=int, nargs="+", default=[0, 4, 64, 512])
    parser.add_argument("--variant", default="tiny", choices=["tiny", "vit_b", "vit_l", "vit_h"])
    parser.add_argument("--checkpoint", default=None, help="local SAM checkpoint (random weights if omitted)")
    parser.add_argument("--image-size", type=int, default=None, help="SAM input side (default: native)")
    parser.add_argument("--tile-size", type=int, default=None, help="tile side (default: the SAM input side)")
    parser.add_argument("--prompt", default="box", choices=["box", "none"])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="torch.compile the image encoder")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is steadiest on a shared host)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    results = measure(args.ranks, args)
    base = results.get(4) or results[args.ranks[0]]
    summary = {"ranks": {
        str(rank): {"trainable": r["trainable"], "step_ratio": round(r["seconds"] / base["seconds"], 3),
                    "mem_ratio": round(r["bytes"] / base["bytes"], 3)}
        for rank, r in results.items()
    }}
    if args.json:
        print(json.dumps(summary))
        return summary
    print(f"sam-lora {args.variant} {args.prompt}-prompt, batch {args.batch_size}, {args.device}"
          f"{' bf16' if args.bf16 else ''}; ratios relative to rank {4 if 4 in results else args.ranks[0]}")
    header = ("rank", "trainable", "total", "s/step", "it/s", "img/s", "GiB", "step×", "mem×")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (5, 11, 11, 8, 7, 7, 7, 6, 6))))
    for rank, r in results.items():
        ratios = summary["ranks"][str(rank)]
        print(f"{rank:>5} {r['trainable']:>11,} {r['total']:>11,} {r['seconds']:>8.3f} {1 / r['seconds']:>7.2f} "
              f"{args.batch_size / r['seconds']:>7.2f} {r['bytes'] / 2**30:>7.3f} "
              f"{ratios['step_ratio']:>6.2f} {ratios['mem_ratio']:>6.2f}")
    if args.device.startswith("cuda"):
        print(ANCHORS_H200)
    return summary


if __name__ == "__main__":
    main()
