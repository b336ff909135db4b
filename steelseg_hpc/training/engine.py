"""Build the DeepSpeed engine for a run, and save and load its checkpoints.

The model and its loss form one module, ZeRO and precision come from the config.

The loss is computed inside the module DeepSpeed wraps (:class:`TrainStep`), so DeepSpeed's
forward covers it: autocast for bf16, and the parameter hooks of ZeRO-3. The loss itself always
runs in fp32 with autocast off, whatever the model computed in.

``channels_last`` makes the inputs and every activation channels-last (NHWC) while the
parameters stay contiguous for DeepSpeed (see
:func:`~steelseg_hpc.training.channels_last.channels_last_activations`); ``compile`` compiles the model's
forward in place (``nn.Module.compile``), so its state-dict keys, and so checkpoints and
evaluation, are those of the eager model. The loss stays eager.

Example:
    >>> engine, step = build_engine(config, env, num_classes=3, steps_per_epoch=10)  # doctest: +SKIP
    >>> loss, logits = engine(images, masks)  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.models import build_model
from steelseg_hpc.models.losses import SegmentationLoss
from steelseg_hpc.training.channels_last import channels_last_activations
from steelseg_hpc.training.compiling import check_compile
from steelseg_hpc.training.config import RunConfig
from steelseg_hpc.training.deepspeed_config import build_deepspeed_config
from steelseg_hpc.training.distributed import DistEnv, import_deepspeed
from steelseg_hpc.training.precision import resolve_precision
from steelseg_hpc.training.weights import WEIGHTS_FILE, WeightsMeta, write_weights

log = logging.getLogger(__name__)

def _as_fp32(logits: Any) -> Any:
    if isinstance(logits, (list, tuple)):
        return [item.float() for item in logits]
    return logits.float()


class TrainStep(nn.Module):
    """``forward(images, masks) -> (loss, logits)`` for any model of the zoo.

    Models that need the ground truth to build prompts (SAM box mode) provide
    ``loss_and_logits(images, masks, loss_fn)``; for the others this is ``loss_fn(model(images))``.
    With deep supervision the loss sees every output and the main one is returned as logits.
    With ``channels_last`` the images enter the model channels-last.
    """

    def __init__(self, model: nn.Module, loss_fn: nn.Module, channels_last: bool = False):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.channels_last = channels_last

    def fp32_loss(self, logits: Any, masks: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=masks.device.type, enabled=False):
            return self.loss_fn(_as_fp32(logits), masks)

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if hasattr(self.model, "loss_and_logits"):
            loss, logits = self.model.loss_and_logits(images, masks, self.fp32_loss)
        else:
            outputs = self.model(images)
            loss = self.fp32_loss(outputs, masks)
            logits = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        return loss.float(), logits.detach()


def build_model_for_run(config: RunConfig, num_classes: int) -> nn.Module:
    """The run's architecture with its options (seeded, so every rank starts identical).

    With ``channels_last`` its activations are channels-last; ``compile`` is applied by
    :func:`build_engine`, which first checks that torch.compile can run on the device.
    """
    torch.manual_seed(config.seed)
    model = build_model(config.model.name, in_channels=1, num_classes=num_classes, **config.model.options())
    if config.channels_last:
        channels_last_activations(model)
    return model


def build_loss(config: RunConfig, num_classes: int) -> nn.Module:
    """The run's loss: the dense focal + Jaccard + MS-SSIM, with the architecture's weights."""
    weights = config.loss_weights()
    return SegmentationLoss(num_classes, focal_weight=weights.focal_weight,
                            jaccard_weight=weights.jaccard_weight,
                            msssim_weight=weights.msssim_weight, focal_gamma=weights.focal_gamma)


def build_engine(config: RunConfig, env: DistEnv, num_classes: int, steps_per_epoch: int,
                 precision: str | None = None, device: torch.device | None = None):
    """Create the DeepSpeed engine (model, AdamW, warm-up + cosine schedule, ZeRO, precision).

    Args:
        precision: The resolved precision (``"bf16"``/``"fp32"``); None resolves
            ``config.precision`` for this machine.

    Returns:
        ``(engine, train_step)``: ``engine`` wraps ``train_step`` (a :class:`TrainStep`).

    Raises:
        ConfigError: ``compile = true`` where torch.compile cannot run, ``sync_batchnorm``
            without GPUs, or a model without trainable parameters.
    """
    deepspeed = import_deepspeed()
    device_type = device.type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if config.compile:
        check_compile(device_type)
    if precision is None:
        precision = resolve_precision(config.precision, device_type).resolved
    model = build_model_for_run(config, num_classes)
    if config.sync_batchnorm and env.world_size > 1:
        if not torch.cuda.is_available():
            raise ConfigError("sync_batchnorm needs CUDA GPUs; set sync_batchnorm = false on the CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if config.compile:
        model.compile()
    step = TrainStep(model, build_loss(config, num_classes), channels_last=config.channels_last)
    if device is not None:
        step = step.to(device)
    ds_config = build_deepspeed_config(config, env.world_size, steps_per_epoch, precision)
    trainable = [p for p in step.parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError(f"model {config.model.name!r} has no trainable parameters")
    engine, _, _, _ = deepspeed.initialize(model=step, model_parameters=trainable, config=ds_config)
    return engine, step


@contextlib.contextmanager
def gathered_model(engine) -> Iterator[nn.Module]:
    """The wrapped model with full parameters on every rank (gathered first under ZeRO-3)."""
    model = engine.module.model
    if engine.zero_optimization_stage() != 3:
        yield model
        return
    deepspeed = import_deepspeed()
    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        yield model


def save_engine_checkpoint(engine, folder: Path, client_state: dict, weights_meta: WeightsMeta,
                           is_main: bool) -> None:
    """Write DeepSpeed's state of every rank into ``folder`` and rank 0's weights file beside it.

    For an architecture that checkpoints only what it trains (``weights_meta.kind ==
    "trainable"``, SAM_LoRA), DeepSpeed leaves the frozen parameters out too; its optimizer state
    covers only the trainable ones anyway. The weights file holds plain fp32 weights, so
    evaluation needs neither DeepSpeed nor the number of ranks the run used.
    """
    folder = Path(folder)
    engine.save_checkpoint(str(folder.parent), tag=folder.name, client_state=client_state,
                           save_latest=False,
                           exclude_frozen_parameters=weights_meta.kind == "trainable")
    with gathered_model(engine) as model:
        if is_main:
            write_weights(folder / WEIGHTS_FILE, model, weights_meta)


def load_engine_checkpoint(engine, root: Path, tag: str, weights_kind: str) -> tuple[str | None, dict]:
    """Load DeepSpeed's state of ``root/tag`` (the frozen base stays as built for ``trainable``)."""
    return engine.load_checkpoint(str(root), tag=tag, load_module_strict=weights_kind == "full")
