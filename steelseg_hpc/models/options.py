"""The options of the CNN blocks and their checks: each bad value is a ConfigError naming its field.

:class:`BlockOptions` carries the per-block choices (kernel size, norm, activation, pooling); the
``check_*`` functions validate the model-level options the builders pass on.

Example:
    >>> BlockOptions(kernel_size=7, activation="glu").glu_mode
    'pointwise'
    >>> check_dilation_rates([1, 2])
    (1, 2)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from steelseg_hpc.core.errors import ConfigError

NORMS = ("batch", "group", "instance", "none")
ACTIVATIONS = ("relu", "leaky_relu", "gelu", "silu", "glu")
POOLINGS = ("max", "avg", "blur")
# How a GLU activation gets its 2C pre-activation channels (docs/models.md, "The GLU blow-up"):
# "pointwise" (ours) gates the k x k conv's output through a 1x1 conv C -> 2C: ~1.05x the FLOPs;
# "full" (textbook) makes the k x k conv itself emit 2C channels: 2x FLOPs, ~1.6x memory.
# The naive blocks the benchmark compares them with are no option (models/naive_glu.py).
GLU_MODES = ("pointwise", "full")


@dataclass(frozen=True)
class BlockOptions:
    """The per-block choices an ablation changes.

    Args:
        kernel_size: odd kernel of the feature convolutions (3 vanilla, 7 Enhanced).
        norm: "batch", "group" (8 groups or fewer), "instance" or "none".
        activation: "relu", "leaky_relu", "gelu", "silu" or "glu" (torch.nn.GLU over channels).
        glu_mode: how a GLU gets its gate: "pointwise" (default) or "full" (see GLU_MODES above).
        pooling: downsampling, "max", "avg" or "blur" (Zhang 2019 anti-aliased max pooling).
    """

    kernel_size: int = 3
    norm: str = "batch"
    activation: str = "relu"
    glu_mode: str = "pointwise"
    pooling: str = "max"

    def __post_init__(self) -> None:
        _choose("norm", self.norm, NORMS)
        _choose("activation", self.activation, ACTIVATIONS)
        _choose("glu_mode", self.glu_mode, GLU_MODES)
        _choose("pooling", self.pooling, POOLINGS)
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be a positive odd integer, got {self.kernel_size}")


def _choose(field: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{field} {value!r} is not one of: {', '.join(choices)}")


SKIP_ORDERS = ("resample-then-conv", "conv-then-resample")


def check_skip_order(skip_order: str) -> str:
    """Validate the ``skip_order`` option (raises ConfigError naming the choices)."""
    _choose("skip_order", skip_order, SKIP_ORDERS)
    return skip_order


def check_flag(field: str, value: object) -> bool:
    """Validate an on/off option (a TOML ``true``/``false``, not a string or a number)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{field} must be true or false, got {value!r}")
    return value


def check_dilation_rates(rates: Sequence[int]) -> tuple[int, int]:
    """Validate ``dilation_rates``: two positive integers, one per conv of a DoubleConv."""
    rates = tuple(int(r) for r in rates)
    if len(rates) != 2 or min(rates) < 1:
        raise ConfigError(f"dilation_rates must be two positive integers, got {rates}")
    return rates  # type: ignore[return-value]
