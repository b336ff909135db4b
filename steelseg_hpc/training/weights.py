"""The fp32 weights a checkpoint holds for evaluation and export (no DeepSpeed needed to read them).

``weights.safetensors`` in a checkpoint folder holds, as the registry says for the architecture:

- ``full``: every tensor of the model's state dict (the CNNs);
- ``trainable``: only the parameters that train (SAM_LoRA: the LoRA A/B matrices, the mask
  decoder), plus the identity of the base checkpoint the frozen rest comes from: its path and
  SHA-256, or, for a randomly initialised base, the seed that rebuilds it.

The file's metadata also names the architecture, its options, the classes and the base, so a
model is rebuilt from the file alone (:func:`load_model`). A base that changed since the run
started is refused: LoRA weights over another base would silently mean another model.

Example:
    >>> meta = WeightsMeta(arch="unet3plus", options={"base_channels": 4}, num_classes=3,
    ...                    class_names=["a", "b", "c"], kind="full")
    >>> WeightsMeta.from_header(meta.to_header()) == meta
    True
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from steelseg_hpc.core.errors import DataError
from steelseg_hpc.core.io import atomic_write_bytes, sha256_file
from steelseg_hpc.models import architecture, build_model, sam_io

WEIGHTS_FILE = "weights.safetensors"
_META_KEY = "steelseg_weights"


@dataclass(frozen=True)
class WeightsMeta:
    """What a weights file is: architecture, options, classes, full or trainable-only, and base."""

    arch: str
    options: dict[str, Any]
    num_classes: int
    class_names: list[str]
    kind: str = "full"
    base: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def to_header(self) -> dict[str, str]:
        return {_META_KEY: json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def from_header(cls, header: dict[str, str]) -> "WeightsMeta":
        return cls(**json.loads(header[_META_KEY]))


def base_identity(arch: str, options: dict[str, Any], seed: int) -> dict[str, Any]:
    """The base a ``trainable`` run adapts: ``{"path", "sha256"}`` of its checkpoint, or the seed.

    Architectures that checkpoint every weight have no base (``{}``).
    """
    entry = architecture(arch)
    if entry.checkpoint != "trainable":
        return {}
    path = options.get(entry.base_option) if entry.base_option else None
    if not path:
        return {"path": None, "random_init_seed": seed}
    path = Path(path).absolute()
    if not path.is_file():
        raise DataError(f"base checkpoint {path} does not exist (model.{entry.base_option})")
    return {"path": str(path), "sha256": sha256_file(path)}


def check_same_base(recorded: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Refuse to put trainable weights on a base other than the one they were trained on."""
    if recorded == current:
        return
    def describe(base: dict[str, Any]) -> str:
        if base.get("path"):
            return f"{base['path']} (sha256 {str(base.get('sha256'))[:12]})"
        return f"random initialisation (seed {base.get('random_init_seed')})"
    raise DataError(f"{where} was trained on the base {describe(recorded)}, but the run now names "
                    f"{describe(current)}; use the same base checkpoint (model.checkpoint)")


def write_weights(path: Path, model: nn.Module, meta: WeightsMeta) -> None:
    """Write the model's weights (all, or the trainable ones for ``meta.kind == "trainable"``)."""
    if meta.kind == "trainable":
        sam_io.save_trainable(model, path, metadata=meta.to_header())
        return
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()}
    atomic_write_bytes(path, save_safetensors(tensors, metadata=meta.to_header()))


def read_meta(path: Path) -> WeightsMeta:
    """The metadata of a weights file.

    Raises:
        DataError: the file is missing, truncated or not a steelseg weights file.
    """
    try:
        with Path(path).open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            raw = length.to_bytes(8, "little") + handle.read(length)
        return WeightsMeta.from_header(sam_io.read_metadata(raw))
    except FileNotFoundError:
        raise DataError(f"{path}: weights file not found") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a readable weights file (truncated or damaged?): "
                        f"{type(exc).__name__}: {exc}") from None


def build_from_meta(meta: WeightsMeta) -> nn.Module:
    """The architecture of ``meta``, initialised as the run built it (seeded)."""
    torch.manual_seed(meta.seed)
    return build_model(meta.arch, in_channels=1, num_classes=meta.num_classes, **meta.options)


def load_model(path: Path) -> tuple[nn.Module, WeightsMeta]:
    """Rebuild the model a weights file describes and load its weights, in eval mode.

    For ``trainable`` files the base is rebuilt from ``meta.options`` (its checkpoint or its
    seed) and must still be the one the run trained on.

    Raises:
        DataError: unreadable file, changed base, or tensors that do not fit the model.
    """
    meta = read_meta(path)
    if meta.kind == "trainable":
        check_same_base(meta.base, base_identity(meta.arch, meta.options, meta.seed), str(path))
    model = build_from_meta(meta)
    if meta.kind == "trainable":
        sam_io.load_trainable(model, path)
        return model.eval(), meta
    try:
        tensors = load_safetensors(Path(path).read_bytes())
    except (OSError, SafetensorError) as exc:
        raise DataError(f"{path}: not a readable weights file: {type(exc).__name__}: {exc}") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise DataError(f"{path}: weights do not fit {meta.arch} with its options: "
                        f"{str(exc).splitlines()[0]}") from None
    return model.eval(), meta
