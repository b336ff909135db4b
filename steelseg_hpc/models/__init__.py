"""Segmentation architectures behind one registry (see :func:`build_model`)."""
from steelseg_hpc.models.registry import build_model, list_models, register

__all__ = ["build_model", "list_models", "register"]

# Importing an architecture module registers its names (issue 3: the CNN zoo).
from steelseg_hpc.models import elunet as _elunet  # noqa: E402,F401
from steelseg_hpc.models import unet3plus as _unet3plus  # noqa: E402,F401
from steelseg_hpc.models import sam_segmenter as _sam_segmenter  # noqa: E402,F401  registers "sam-lora"
