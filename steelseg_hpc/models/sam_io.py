"""Save and load only the trainable weights of a SAM model (safetensors), and merge LoRA.

A rank-4 vit_b adapter is ~150 k parameters against SAM's 93.7 M, so a run stores only what
it trained (LoRA A/B, the mask decoder, whatever else ``requires_grad``) and rebuilds the rest
from the original SAM checkpoint. :func:`merge_lora` folds ``B @ A`` into the frozen qkv
weights for inference, removing the adapters' extra matmuls.

Example:
    >>> import tempfile, os
    >>> from steelseg_hpc.models.sam_build import build_tiny_sam
    >>> from steelseg_hpc.models.sam_lora import SamLoRA
    >>> model = SamLoRA(build_tiny_sam(), rank=4)
    >>> path = os.path.join(tempfile.mkdtemp(), "lora.safetensors")
    >>> save_trainable(model, path, metadata={"rank": "4"})
    >>> load_trainable(model, path)["rank"]
    '4'
    >>> merge_lora(model)
    2
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from steelseg_hpc.core.errors import DataError
from steelseg_hpc.core.io import atomic_write_bytes
from steelseg_hpc.models.sam_lora import LoRA_qkv, SamLoRA

_KEYS_METADATA = "steelseg_trainable_keys"


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the parameters that require grad, by (deduplicated) name.

    Example:
        >>> len(trainable_state_dict(nn.Linear(2, 2)))
        2
    """
    return {
        name: param.detach().to("cpu").contiguous()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def save_trainable(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write the trainable parameters of ``model`` to a safetensors file, atomically.

    Args:
        model: Any module; only parameters with ``requires_grad`` are saved.
        path: Destination file (``.safetensors`` by convention).
        metadata: Extra string metadata (e.g. the model options), returned by
            :func:`load_trainable`.
    """
    tensors = trainable_state_dict(model)
    header = dict(metadata or {})
    header[_KEYS_METADATA] = json.dumps(sorted(tensors))
    atomic_write_bytes(path, save_safetensors_bytes(tensors, metadata=header))


def load_trainable(model: nn.Module, path: str | Path) -> dict[str, str]:
    """Load weights saved by :func:`save_trainable` into ``model`` in place.

    The file must hold exactly the parameters of ``model`` that require grad now, with the
    same shapes: otherwise the model was built with other options (rank, ``lora_layer``,
    variant, trainable parts, number of classes) and loading would silently mix weights.

    Args:
        model: The model, built with the same options as the saved one.
        path: A file written by :func:`save_trainable`.

    Returns:
        The file's metadata (without the internal key list).

    Raises:
        DataError: Missing or unreadable file, or keys/shapes that do not match ``model``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        tensors = load_safetensors_bytes(raw)
        metadata = read_metadata(raw)
    except Exception as exc:  # OSError, SafetensorError, JSON errors on a damaged header
        raise DataError(f"trainable-weights file {path} is unreadable: {type(exc).__name__}: {exc}") from None
    expected = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    mis_shaped = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or mis_shaped:
        first = (missing + unexpected + mis_shaped)[0]
        raise DataError(
            f"trainable-weights file {path} does not match this model ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(mis_shaped)} mis-shaped, e.g. {first!r}); "
            "build the model with the options it was trained with"
        )
    with torch.no_grad():
        for name, param in expected.items():
            param.copy_(tensors[name])
    metadata.pop(_KEYS_METADATA, None)
    return metadata


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA adapter into its qkv Linear and put the plain Linear back, in place.

    ``W_q += B_q A_q`` and ``W_v += B_v A_v``; outputs are unchanged up to float rounding.

    Args:
        model: A module containing :class:`~steelseg_hpc.models.sam_lora.LoRA_qkv` modules.

    Returns:
        The number of adapters merged.
    """
    merged = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, LoRA_qkv):
                continue
            qkv, dim = child.qkv, child.dim
            with torch.no_grad():
                qkv.weight[:dim] += child.linear_b_q.weight @ child.linear_a_q.weight
                qkv.weight[-dim:] += child.linear_b_v.weight @ child.linear_a_v.weight
            setattr(parent, child_name, qkv)
            merged += 1
    for wrapper in model.modules():
        if isinstance(wrapper, SamLoRA):  # the adapters are gone; keep its lists truthful
            wrapper.A_weights.clear()
            wrapper.B_weights.clear()
    return merged


def read_metadata(raw: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's bytes (8-byte length, then a JSON header)."""
    header_length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_length])
    return dict(header.get("__metadata__") or {})
