"""The model registry: each architecture registers a builder and what other stages need to know.

An :class:`Architecture` says, besides how to build the model, which family it belongs to and which
variant of it it is (so a report can compare Enhanced with its vanilla model), which loss section
of the run config trains it, whether it has a width option, and what a run checkpoints (all
weights, or only the trainable ones on top of a base checkpoint, as LoRA does). Other stages ask
the registry instead of guessing from names.

Example:
    >>> from steelseg_hpc.models import architecture, build_model, list_models
    >>> "unet3plus" in list_models()
    True
    >>> arch = architecture("unet3plus-enhanced")
    >>> arch.family, arch.variant, arch.vanilla, arch.width_option
    ('unet3plus', 'enhanced', 'unet3plus', 'base_channels')
    >>> model = build_model("unet3plus", in_channels=1, num_classes=3, base_channels=4)
"""
from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from steelseg_hpc.core.errors import ConfigError

ModelBuilder = Callable[..., Any]
LossKind = Literal["dense", "sam"]
CheckpointKind = Literal["full", "trainable"]


@dataclass(frozen=True)
class Architecture:
    """One registered architecture.

    Attributes:
        name: The registry name (``model.name`` in a run config).
        builder: ``builder(in_channels, num_classes, **options) -> nn.Module``.
        family: Architectures compared with each other (``"unet3plus"``, ``"elunet"``, ``"sam"``).
        variant: ``"vanilla"``, ``"enhanced"``, ``"enhanced-glu"``, ``"lora"``, ...
        loss: The run-config loss section that trains it: ``"dense"`` (``[loss]``) or ``"sam"``
            (``[loss.sam]``).
        width_option: The option that scales its width (``"base_channels"``), or None.
        checkpoint: ``"full"``: a run saves every weight; ``"trainable"``: only the trainable
            tensors (and their optimizer state), the frozen rest comes from a base checkpoint.
        base_option: The option naming that base checkpoint file (``"checkpoint"``), or None.
        summary: One line describing it.
        options_of: The callable whose annotated keywords are the options (the builder itself, or
            what a ``builder(**options)`` passes them to); each given option is checked against
            its annotation before the build.
    """

    name: str
    builder: ModelBuilder
    family: str
    variant: str = "vanilla"
    loss: LossKind = "dense"
    width_option: str | None = "base_channels"
    checkpoint: CheckpointKind = "full"
    base_option: str | None = None
    summary: str = ""
    options_of: Callable[..., Any] | None = None

    @property
    def vanilla(self) -> str | None:
        """The name of this family's vanilla architecture (None if the family has none)."""
        for candidate in _REGISTRY.values():
            if candidate.family == self.family and candidate.variant == "vanilla":
                return candidate.name
        return None


_REGISTRY: dict[str, Architecture] = {}


def register(name: str, *, family: str, variant: str = "vanilla", loss: LossKind = "dense",
             width_option: str | None = "base_channels", checkpoint: CheckpointKind = "full",
             base_option: str | None = None, options_of: Callable[..., Any] | None = None
             ) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: register ``builder(in_channels, num_classes, **options)`` under ``name``.

    The builder's docstring's first line becomes the architecture's summary.
    """

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} is registered twice")
        summary = (builder.__doc__ or "").strip().splitlines()[0] if builder.__doc__ else ""
        _REGISTRY[name] = Architecture(name, builder, family, variant, loss, width_option,
                                       checkpoint, base_option, summary, options_of)
        return builder

    return decorator


def list_models() -> list[str]:
    """Names of all registered architectures, sorted."""
    return sorted(_REGISTRY)


def architectures() -> list[Architecture]:
    """Every registered architecture, in registration order (the lab's comparison order)."""
    return list(_REGISTRY.values())


def architecture(name: str) -> Architecture:
    """The registry entry of ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown architecture {name!r}; choose one of: {', '.join(list_models())}")
    return _REGISTRY[name]


class OptionTypeError(ConfigError):
    """An option's value is not of its annotated type (``option``, ``problem``: for the caller's prefix)."""

    def __init__(self, option: str, problem: str):
        super().__init__(f"{option}: {problem}")
        self.option, self.problem = option, problem


@functools.cache
def _option_types(options_of: Callable[..., Any]) -> dict[str, TypeAdapter]:
    target = options_of.__init__ if isinstance(options_of, type) else options_of
    hints = typing.get_type_hints(target)
    return {key: TypeAdapter(hint) for key, hint in hints.items()
            if key not in ("return", "in_channels", "num_classes") and hint is not Any}


def check_option_types(name: str, options: dict[str, Any]) -> None:
    """Check each option against its annotation, strictly (``"8"`` is not an int, ``1`` not a bool).

    Raises:
        OptionTypeError: the first option of the wrong type, named with the type it expects.
    """
    entry = architecture(name)
    types = _option_types(entry.options_of or entry.builder)
    for key, value in options.items():
        if key in types:
            try:
                types[key].validate_python(value, strict=True)
            except ValidationError as exc:
                expected = exc.errors()[0]["msg"].replace("Input should be ", "expected ", 1)
                raise OptionTypeError(key, f"{expected}, got {value!r}") from None


def build_model(name: str, in_channels: int = 1, num_classes: int = 3, **options: Any) -> Any:
    """Build the architecture registered as ``name``.

    Raises:
        ConfigError: unknown name, or an option the architecture does not take, or of the wrong
            type (:class:`OptionTypeError`).
    """
    entry = architecture(name)
    check_option_types(name, options)
    try:
        return entry.builder(in_channels=in_channels, num_classes=num_classes, **options)
    except TypeError as exc:
        raise ConfigError(f"architecture {name!r}: {exc}") from None
