"""Segmentation architectures behind one registry (see :func:`build_model`).

Importing the package registers the whole zoo, so the registry is complete wherever it is used.
"""
from steelseg_hpc.models.registry import (
    Architecture,
    OptionTypeError,
    architecture,
    architectures,
    build_model,
    list_models,
    register,
)

# Importing an architecture module registers its names, in the lab's comparison order.
from steelseg_hpc.models import unet3plus as _unet3plus  # noqa: E402,F401
from steelseg_hpc.models import elunet as _elunet  # noqa: E402,F401
from steelseg_hpc.models import sam_segmenter as _sam_segmenter  # noqa: E402,F401

__all__ = ["Architecture", "OptionTypeError", "architecture", "architectures", "build_model", "list_models", "register"]
