"""The model registry: architectures register a builder under a name; ``build_model`` builds one.

Example:
    >>> from steelseg_hpc.models import build_model, list_models
    >>> "unet3plus" in list_models()
    True
    >>> model = build_model("unet3plus", in_channels=1, num_classes=3, base_channels=4)
"""
from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

from steelseg_hpc.errors import ConfigError

ModelBuilder = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelBuilder] = {}


def register(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: register ``builder(in_channels, num_classes, **options)`` under ``name``."""

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return decorator


def list_models() -> list[str]:
    """Names of all registered architectures, sorted."""
    return sorted(_REGISTRY)


def build_model(name: str, in_channels: int = 1, num_classes: int = 3, **options: Any) -> nn.Module:
    """Build the architecture registered as ``name``.

    Raises:
        ConfigError: unknown name, or an option the architecture does not take.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown architecture {name!r}; choose one of: {', '.join(list_models())}")
    try:
        return _REGISTRY[name](in_channels=in_channels, num_classes=num_classes, **options)
    except TypeError as exc:
        raise ConfigError(f"architecture {name!r}: {exc}") from None
