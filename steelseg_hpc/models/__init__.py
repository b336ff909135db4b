"""Segmentation architectures behind one registry (see :func:`build_model`).

The first name read from the package registers the whole zoo, so the registry is complete wherever
it is used; importing the package alone loads nothing (``steelseg-hpc --help`` never loads torch).
"""
import importlib
from typing import Any

__all__ = ["Architecture", "OptionTypeError", "architecture", "architectures", "build_model", "check_device",
           "list_models", "profile_zoo", "register"]

#: Public name -> the module that defines it.
_EXPORTS = {
    "Architecture": "registry", "OptionTypeError": "registry", "architecture": "registry",
    "architectures": "registry", "build_model": "registry", "list_models": "registry", "register": "registry",
    "check_device": "profiling", "profile_zoo": "profiling",
}
#: Importing an architecture module registers its names, in the lab's comparison order.
ZOO_MODULES = ("unet3plus", "elunet", "sam_segmenter")


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for zoo_module in ZOO_MODULES:
        importlib.import_module(f"{__name__}.{zoo_module}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
