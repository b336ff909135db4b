"""Export a run's weights for inference: one self-contained safetensors file, LoRA merged.

A SAM_LoRA checkpoint holds only its adapters and decoder on top of a base checkpoint. For
inference that split is a cost (two files, and the adapters' extra matmuls), so the export folds
every adapter into its qkv projection (``W += B A``) and writes the whole model: it then loads as
a plain SAM of the same options with rank 0, with outputs equal to the LoRA model's up to float
rounding. CNN runs export their weights as they are.

Example:
    >>> info = export_run(Path("runs/sam-r4"), Path("sam-r4-merged.safetensors"))  # doctest: +SKIP
    >>> model = load_exported(Path("sam-r4-merged.safetensors"))  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch.nn as nn

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.inference.evaluate import load_trained_model
from steelseg_hpc.training.weights import load_model, write_weights


def export_run(run_dir: Path, out: Path, force: bool = False) -> dict:
    """Write the run's best model (adapters merged) to ``out``; returns what was written.

    Args:
        force: replace ``out`` if it exists (else an existing file, whoever wrote it, is kept).

    Returns:
        ``{"out", "checkpoint", "arch", "merged_adapters", "tensors"}``.

    Raises:
        ConfigError: ``out`` exists (a folder, or a file without ``force``).
    """
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; expected the .safetensors file to write")
    if out.exists() and not force:
        raise ConfigError(f"--out {out} exists and would be replaced: choose a new file, or pass --force to "
                          "replace it")
    model, tag, meta = load_trained_model(run_dir)
    merged = model.merge_lora() if hasattr(model, "merge_lora") else 0
    options = dict(meta.options)
    if merged:
        # The merged model has plain qkv projections: the structure of a rank-0 model, no base.
        options.update(rank=0, checkpoint=None)
    exported = replace(meta, options=options, kind="full", base={})
    write_weights(out, model, exported)
    return {"out": str(out), "checkpoint": tag, "arch": meta.arch, "merged_adapters": merged,
            "tensors": len(model.state_dict())}


def load_exported(path: Path) -> nn.Module:
    """The model an exported file holds, in eval mode (no base checkpoint, no DeepSpeed)."""
    model, _ = load_model(path)
    return model


__all__ = ["export_run", "load_exported"]
