"""Build a Segment Anything model from the ``segment-anything`` package and a local checkpoint.

Variants ``vit_b``, ``vit_l`` and ``vit_h`` come from ``segment_anything.sam_model_registry``;
``tiny`` is built from the same package classes (same block structure: windowed blocks, one
global block, decomposed relative positions) but small enough to run CPU tests in milliseconds.
Checkpoints are local paths only (nothing is downloaded): a missing file raises
:class:`~steelseg_hpc.core.errors.ConfigError`, a truncated or mismatched one
:class:`~steelseg_hpc.core.errors.DataError`, each naming the file.

``image_size`` other than the variant's native size (1024 for the ViTs, 128 for ``tiny``)
interpolates the absolute position embedding and the global blocks' relative-position tables
after the checkpoint is loaded, as SAMed does at 512.

Example:
    >>> sam = build_sam("tiny", image_size=64)
    >>> sam.image_encoder.img_size, tuple(sam.image_encoder.pos_embed.shape)
    (64, (1, 4, 4, 64))
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from steelseg_hpc.core.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SAM_VARIANTS = ("tiny", "vit_b", "vit_l", "vit_h")
NATIVE_IMAGE_SIZE = {"tiny": 128, "vit_b": 1024, "vit_l": 1024, "vit_h": 1024}
PATCH_SIZE = 16
# Encoder width identifies a checkpoint's variant, so a mismatch message can say which one it is.
_VARIANT_BY_EMBED_DIM = {64: "tiny", 768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def build_tiny_sam() -> Sam:
    """A randomly initialised SAM with ViT width 64, depth 2 (block 1 global), 128-px input.

    Example:
        >>> sum(p.numel() for p in build_tiny_sam().parameters()) < 500_000
        True
    """
    embed_dim, prompt_dim, image_size = 64, 32, NATIVE_IMAGE_SIZE["tiny"]
    grid = image_size // PATCH_SIZE
    encoder = ImageEncoderViT(
        img_size=image_size, patch_size=PATCH_SIZE, embed_dim=embed_dim, depth=2, num_heads=2,
        mlp_ratio=4, out_chans=prompt_dim, qkv_bias=True, use_rel_pos=True, window_size=4,
        global_attn_indexes=(1,), norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    )
    prompt_encoder = PromptEncoder(
        embed_dim=prompt_dim, image_embedding_size=(grid, grid),
        input_image_size=(image_size, image_size), mask_in_chans=16,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3, transformer_dim=prompt_dim, iou_head_depth=3, iou_head_hidden_dim=32,
        transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2),
    )
    return Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=decoder).eval()


def build_sam(variant: str, checkpoint: str | Path | None = None, image_size: int | None = None) -> Sam:
    """Build a SAM variant, load its weights from a local file and set its input size.

    Args:
        variant: ``"tiny"``, ``"vit_b"``, ``"vit_l"`` or ``"vit_h"``.
        checkpoint: Path of a state dict saved with ``torch.save`` (the official ``.pth``
            files) or a ``.safetensors`` file; ``None`` keeps the random initialisation.
        image_size: Square input side in pixels (a multiple of 16); ``None`` means the
            variant's native size.

    Returns:
        The SAM model in eval mode, on the CPU, in float32.

    Raises:
        ConfigError: Unknown variant, bad image size, or the checkpoint file does not exist.
        DataError: The checkpoint is unreadable (truncated, not a state dict) or belongs to
            another architecture.

    Example:
        >>> build_sam("vit_b", checkpoint="/no/such/sam_vit_b.pth")
        Traceback (most recent call last):
        ...
        steelseg_hpc.core.errors.ConfigError: SAM checkpoint /no/such/sam_vit_b.pth does not exist; ...
    """
    if variant not in SAM_VARIANTS:
        raise ConfigError(f"unknown SAM variant {variant!r}; choose one of: {', '.join(SAM_VARIANTS)}")
    native = NATIVE_IMAGE_SIZE[variant]
    image_size = native if image_size is None else image_size
    if not isinstance(image_size, int) or image_size < 2 * PATCH_SIZE or image_size % PATCH_SIZE:
        raise ConfigError(f"SAM image_size must be a multiple of {PATCH_SIZE} and >= 32, got {image_size!r}")
    state = _read_checkpoint(Path(checkpoint)) if checkpoint is not None else None
    sam = build_tiny_sam() if variant == "tiny" else sam_model_registry[variant](checkpoint=None)
    if state is not None:
        _load_checkpoint_state(sam, state, Path(checkpoint), variant)
    elif variant != "tiny":
        logger.warning("SAM %s has no checkpoint: its weights are random", variant)
    if image_size != native:
        resize_sam_input(sam, image_size)
    return sam.eval()


def resize_sam_input(sam: Sam, image_size: int) -> None:
    """Change SAM's square input side in place, interpolating the position embeddings.

    The absolute position embedding is resampled bilinearly to the new token grid and the
    relative-position tables of the global-attention blocks to ``2 * grid - 1`` entries;
    windowed blocks keep theirs (the window size does not change). Prompt-encoder sizes follow.

    Args:
        sam: A SAM model, modified in place.
        image_size: New input side, a multiple of the patch size (16).
    """
    encoder = sam.image_encoder
    grid = image_size // PATCH_SIZE
    if encoder.pos_embed is not None:
        pos = encoder.pos_embed.data.permute(0, 3, 1, 2)  # [1, C, g, g] for interpolate
        pos = F.interpolate(pos, size=(grid, grid), mode="bilinear", align_corners=False)
        encoder.pos_embed = torch.nn.Parameter(
            pos.permute(0, 2, 3, 1).contiguous(), requires_grad=encoder.pos_embed.requires_grad
        )
    for block in encoder.blocks:
        attention = block.attn
        if block.window_size == 0 and getattr(attention, "use_rel_pos", False):
            for name in ("rel_pos_h", "rel_pos_w"):
                table = getattr(attention, name)
                resized = F.interpolate(table.data.T[None], size=2 * grid - 1, mode="linear", align_corners=False)
                setattr(attention, name, torch.nn.Parameter(resized[0].T.contiguous(), table.requires_grad))
    encoder.img_size = image_size
    prompt = sam.prompt_encoder
    prompt.image_embedding_size = (grid, grid)
    prompt.input_image_size = (image_size, image_size)
    prompt.mask_input_size = (4 * grid, 4 * grid)


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path``, turning every failure into an error naming the file."""
    if path.is_dir():
        raise ConfigError(f"SAM checkpoint {path} is a folder; expected the checkpoint file in it "
                          "(sam_vit_b_01ec64.pth, or a .safetensors)")
    if not path.is_file():
        raise ConfigError(
            f"SAM checkpoint {path} does not exist; checkpoints are not downloaded here: copy the "
            "official sam_vit_*.pth (or a .safetensors) file to local disk and pass its path"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise many types for a damaged file
        # torch's own text suggests weights_only=False, which would run code from the file: never
        raise DataError(
            f"SAM checkpoint {path} is unreadable: truncated, damaged, or not a state dict saved with "
            f"torch.save or safetensors ({type(exc).__name__})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # training checkpoints often nest the weights
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"SAM checkpoint {path} does not hold a state dict of tensors")
    return state


def _load_checkpoint_state(sam: Sam, state: dict[str, torch.Tensor], path: Path, variant: str) -> None:
    """Load ``state`` strictly, explaining missing, unexpected or mis-shaped keys."""
    expected = sam.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(
        k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or mis_shaped:
        patch = state.get("image_encoder.patch_embed.proj.weight")
        guess = _VARIANT_BY_EMBED_DIM.get(int(patch.shape[0])) if patch is not None else None
        hint = f" (it looks like a {guess} checkpoint)" if guess and guess != variant else ""
        details = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped))
            if keys
        )
        raise DataError(f"SAM checkpoint {path} does not match SAM {variant}{hint}: {details}")
    sam.load_state_dict(state, strict=True)
