"""The run configuration: one pydantic model for everything a training run needs.

Values come, in increasing priority, from the defaults shipped in ``steelseg_hpc/defaults/run.toml``,
a run TOML, CLI flags and ``--set KEY=VALUE`` overrides. The ``[model]`` section holds the
architecture name plus its options (``model.base_channels = 8``); those options are checked against
the architecture when the config is loaded, so a typo fails early like any other unknown key.

Example:
    >>> from steelseg_hpc.training.config import load_run_config
    >>> cfg = load_run_config(None, ["model.name=unet3plus", "model.base_channels=4"], epochs=3)
    >>> cfg.epochs, cfg.model.options()
    (3, {'base_channels': 4})
"""
from __future__ import annotations

import copy
import logging
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import ConfigDict, Field

from steelseg_hpc.core.config import StrictModel, apply_overrides, dump_toml, read_toml, validate
from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.models import OptionTypeError, architecture, build_model

log = logging.getLogger(__name__)


class ModelSection(StrictModel):
    """Architecture name; every other key is passed to ``build_model`` as an option."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = "unet3plus"

    def options(self) -> dict[str, Any]:
        """The architecture options (all keys except ``name``)."""
        return dict(self.model_extra or {})


class DataSection(StrictModel):
    store: str = ""
    train_split: str = "train"
    val_split: str = "val"
    num_workers: int = Field(2, ge=0)
    prefetch_factor: int = Field(2, ge=1)
    pin_memory: bool = True
    max_train_tiles: int = Field(0, ge=0)


class OptimizerSection(StrictModel):
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)


class ScheduleSection(StrictModel):
    warmup_epochs: float = Field(1.0, ge=0)
    warmup_start_ratio: float = Field(0.01, ge=0, le=1)
    min_lr_ratio: float = Field(0.01, ge=0, le=1)


class LossWeights(StrictModel):
    focal_weight: float = Field(1.0, ge=0)
    jaccard_weight: float = Field(1.0, ge=0)
    msssim_weight: float = Field(1.0, ge=0)
    focal_gamma: float = Field(2.0, ge=0)


class LossSection(LossWeights):
    sam: LossWeights = LossWeights(msssim_weight=0.0)


class NoiseScaleSection(StrictModel):
    enabled: bool = True
    ema_decay: float = Field(0.95, ge=0, lt=1)


class EvalSection(StrictModel):
    overlap: float = Field(0.5, ge=0, lt=1)
    sigma_scale: float = Field(0.125, gt=0)
    tta: bool = False
    batch_size: int = Field(8, ge=1)
    overlays: int = Field(16, ge=0)


class RunConfig(StrictModel):
    """Everything one training run needs; saved resolved as ``RUN_DIR/config.toml``."""

    epochs: int = Field(50, ge=1)
    patience: int = Field(0, ge=0)
    seed: int = 0
    micro_batch: int = Field(4, ge=1)
    grad_accumulation: int = Field(2, ge=1)
    zero_stage: Literal[0, 1, 2, 3] = 2
    zero_bucket_elements: int = Field(10_000_000, ge=1_000_000)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    grad_clip: float = Field(1.0, ge=0)
    sync_batchnorm: bool = False
    channels_last: bool = False
    compile: bool = False
    time_budget_s: float = Field(0.0, ge=0)
    val_every_tiles: int = Field(0, ge=0)
    keep_checkpoints: int = Field(2, ge=1)
    progress: bool = True
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    optimizer: OptimizerSection = OptimizerSection()
    schedule: ScheduleSection = ScheduleSection()
    loss: LossSection = LossSection()
    noise_scale: NoiseScaleSection = NoiseScaleSection()
    eval: EvalSection = EvalSection()

    def loss_weights(self) -> LossWeights:
        """The loss weights for this architecture (SAM models have their own)."""
        return self.loss.sam if architecture(self.model.name).loss == "sam" else self.loss

    def to_toml(self) -> str:
        """The resolved configuration as TOML text (what ``config.toml`` in a run dir holds)."""
        return dump_toml(self.model_dump(mode="json"))


# CLI flag name -> dotted config key.
FLAG_KEYS = {
    "arch": "model.name",
    "store": "data.store",
    "epochs": "epochs",
    "batch_size": "micro_batch",
    "lr": "optimizer.lr",
    "zero_stage": "zero_stage",
    "precision": "precision",
}

# Keys that may differ when an existing run is resumed: they change neither the model nor the
# optimisation trajectory.
# data.store may be given by another path: the run checks the store's identity instead.
# channels_last, compile and activation checkpointing change how a step is computed, not what
# (equal outputs and gradients within float tolerance), so a run may resume on a machine where
# another setting is faster.
RESUMABLE_CHANGES = {"data.num_workers", "data.prefetch_factor", "data.pin_memory", "progress", "data.store",
                     "channels_last", "compile", "model.activation_checkpointing"}
#: Keys a resume may raise: the run is extended from its latest checkpoint.
EXTENDABLE = ("epochs", "patience", "time_budget_s")
#: Keys whose 0 means "no limit": more than any number.
UNLIMITED_AT_ZERO = ("patience", "time_budget_s")


def default_config_dict() -> dict[str, Any]:
    """The embedded defaults (``steelseg_hpc/defaults/run.toml``) as a plain dict."""
    text = resources.files("steelseg_hpc").joinpath("defaults/run.toml").read_text("utf-8")
    return tomllib.loads(text)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[leaf] = value


def check_model_options(config: RunConfig) -> None:
    """Build the model on the ``meta`` device so unknown architectures or options fail now.

    Raises:
        ConfigError: the registry rejects the name or an option.
    """
    import torch

    options = config.model.options()
    try:
        base_option = architecture(config.model.name).base_option
        if base_option is not None:
            options.pop(base_option, None)  # the base's weights are read when the run starts
        with torch.device("meta"):
            build_model(config.model.name, in_channels=1, num_classes=3, **options)
    except OptionTypeError as exc:
        raise ConfigError(f"model.{exc.option}: {exc.problem}") from None
    except ConfigError as exc:
        raise ConfigError(f"model: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a builder that cannot run on meta is checked later
        log.debug("model options not pre-checked on the meta device: %s", exc)


def load_run_config(
    path: str | Path | None,
    overrides: list[str] | None = None,
    *,
    check_model: bool = True,
    **flags: Any,
) -> RunConfig:
    """Resolve a run configuration: defaults < ``path`` < ``flags`` < ``overrides``.

    Args:
        path: A run TOML, or None for the defaults alone.
        overrides: ``KEY=VALUE`` strings with dotted keys (``model.base_channels=8``).
        check_model: Build the model on the meta device to reject unknown model options.
        **flags: CLI flags (``arch``, ``store``, ``epochs``, ``batch_size``, ``lr``,
            ``zero_stage``, ``precision``); None values are ignored.

    Returns:
        The validated, frozen :class:`RunConfig`.

    Raises:
        ConfigError: unknown key, bad value, unreadable file, or an unknown flag.

    Example:
        >>> load_run_config(None, ["micro_batch=2"], lr=0.01).optimizer.lr
        0.01
    """
    data = default_config_dict()
    source = "run config (defaults)"
    if path is not None:
        data = _deep_merge(data, read_toml(path))
        source = str(path)
    for name, value in flags.items():
        if name not in FLAG_KEYS:
            raise ConfigError(f"unknown run flag {name!r}; choose one of: {', '.join(FLAG_KEYS)}")
        if value is not None:
            _set_dotted(data, FLAG_KEYS[name], str(value) if isinstance(value, Path) else value)
    if overrides:
        data = apply_overrides(data, overrides)
        source += " with --set " + " ".join(overrides)
    config = validate(RunConfig, data, source)
    if check_model:
        check_model_options(config)
    return config


def load_saved_config(path: str | Path) -> RunConfig:
    """Read a resolved ``config.toml`` written into a run directory."""
    return validate(RunConfig, read_toml(path), str(path))


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _reach(key: str, value: float) -> float:
    return float("inf") if key in UNLIMITED_AT_ZERO and value == 0 else float(value)


def extensions(saved: RunConfig, requested: RunConfig) -> dict[str, tuple[float, float]]:
    """The keys a resume raises (more ``epochs``, ``patience`` or ``time_budget_s``), as ``{key: (old, new)}``.

    Example:
        >>> old, new = RunConfig(epochs=2), RunConfig(epochs=3)
        >>> extensions(old, new), extensions(new, old)
        ({'epochs': (2, 3)}, {})
    """
    return {key: (getattr(saved, key), getattr(requested, key)) for key in EXTENDABLE
            if _reach(key, getattr(requested, key)) > _reach(key, getattr(saved, key))}


def config_differences(saved: RunConfig, requested: RunConfig) -> list[str]:
    """Dotted keys whose values differ and that a resume may not change, as ``key: a -> b``.

    Raising ``epochs``, ``patience`` or ``time_budget_s`` (:func:`extensions`) is allowed;
    lowering them is not.
    """
    old = _flatten(saved.model_dump(mode="json"))
    new = _flatten(requested.model_dump(mode="json"))
    allowed = RESUMABLE_CHANGES | set(extensions(saved, requested))
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key) and key not in allowed
    ]
