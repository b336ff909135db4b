"""Checkpoint size of SAM_LoRA vit_b: the full state (what the engine used to save) vs LoRA-only.

Usage:
    python benchmarks/checkpoints.py [--json] [--ranks 4 512] [--image-size 256]

For each rank, one process builds the real engine (DeepSpeed ZeRO-2, AdamW) on SAM vit_b with
random weights (nothing is downloaded), trains one optimiser step on a random tile so the Adam
state exists, then saves the same engine both ways side by side:

- ``full``: DeepSpeed's module state with every parameter, plus every weight in
  ``weights.safetensors`` (the old behaviour);
- ``lora_only``: frozen parameters left out of DeepSpeed's module state, and only the trainable
  tensors in ``weights.safetensors``, which names the base checkpoint instead.

The optimizer state is the same in both: it only ever covered the trainable parameters.
``--image-size`` only shrinks the one training step (SAM's position embeddings are resized);
it does not change any parameter count.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def measure(rank: int, image_size: int, root: Path) -> dict:
    import torch

    from steelseg_hpc.training.config import load_run_config
    from steelseg_hpc.training.distributed import setup_distributed
    from steelseg_hpc.training.engine import build_engine, save_engine_checkpoint
    from steelseg_hpc.training.weights import WeightsMeta

    config = load_run_config(None, ["model.variant=vit_b", f"model.rank={rank}", 'model.prompt="none"',
                                    f"model.image_size={image_size}", "micro_batch=1", "grad_accumulation=1"],
                             arch="sam-lora", precision="fp32", zero_stage=2)
    env = setup_distributed()
    engine, step = build_engine(config, env, num_classes=3, steps_per_epoch=1, precision="fp32")
    images, masks = torch.rand(1, 1, 64, 64), torch.randint(0, 3, (1, 64, 64))
    loss, _ = engine(images, masks)
    engine.backward(loss)
    engine.step()
    model = step.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    sizes = {}
    for kind in ("full", "trainable"):
        meta = WeightsMeta(arch="sam-lora", options=config.model.options(), num_classes=3,
                           class_names=["a", "b", "c"], kind=kind,
                           base={"path": None, "random_init_seed": 0} if kind == "trainable" else {})
        folder = root / f"rank{rank}-{kind}" / "epoch0001"
        folder.mkdir(parents=True)
        save_engine_checkpoint(engine, folder, {"epoch": 1}, meta, is_main=True)
        sizes[kind] = folder_bytes(folder)
    return {
        "rank": rank, "trainable_params": trainable, "total_params": total,
        "full_mib": round(sizes["full"] / 2**20, 1), "lora_only_mib": round(sizes["trainable"] / 2**20, 1),
        "full_vs_lora_only": round(sizes["full"] / sizes["trainable"], 2),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 512])
    parser.add_argument("--image-size", type=int, default=256, help="SAM input side for the one step")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one rank
    args = parser.parse_args(argv)
    if args.one is not None:
        from steelseg_hpc.training.log_capture import ThirdPartyLogs

        with ThirdPartyLogs(), tempfile.TemporaryDirectory(prefix="steelseg-ckpt-") as tmp:
            row = measure(args.one, args.image_size, Path(tmp))
        print(json.dumps(row))
        return {}
    import subprocess

    rows = []
    for rank in args.ranks:  # one process per rank: DeepSpeed keeps one engine's state per process
        done = subprocess.run([sys.executable, __file__, "--one", str(rank), "--image-size", str(args.image_size)],
                              capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    result = {"variant": "vit_b", "ranks": rows,
              **{f"full_vs_lora_only_r{row['rank']}": row["full_vs_lora_only"] for row in rows}}
    if args.json:
        print(json.dumps(result))
    else:
        for row in rows:
            print(f"rank {row['rank']:>4}: trainable {row['trainable_params'] / 1e6:6.2f} M of "
                  f"{row['total_params'] / 1e6:6.2f} M; checkpoint full {row['full_mib']:8.1f} MiB, "
                  f"LoRA-only {row['lora_only_mib']:8.1f} MiB: {row['full_vs_lora_only']:.2f}x smaller")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
