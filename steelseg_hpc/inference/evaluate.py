"""Evaluate a trained run on whole images: metrics per image and overall, confusion, overlays.

The weights come from the run's best checkpoint (``weights.safetensors``, plain fp32 weights, so
neither DeepSpeed nor the original number of ranks is needed) and every whole image of the split is
predicted with :func:`~steelseg_hpc.inference.stitching.sliding_window_logits`. Results go to
``RUN_DIR/eval/<split>[-tta]/``: ``metrics.json`` and PNG overlays (image | truth | prediction).

Example:
    >>> result = evaluate_run(Path("runs/unet"), split="test")  # doctest: +SKIP
    >>> result["overall"]["pixel_accuracy"], result["overall"]["dice_macro"]  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

from steelseg_hpc.core.errors import ConfigError, DataError, TrainingError, UnknownSplitError
from steelseg_hpc.core.io import atomic_write_bytes, atomic_write_json
from steelseg_hpc.core.rundir import RunFiles, read_run_info
from steelseg_hpc.data import StoreInfo, WholeImages, check_same_store, open_store
from steelseg_hpc.inference.stitching import sliding_window_logits
from steelseg_hpc.models.metrics import SegmentationMetrics
from steelseg_hpc.training.checkpoints import CheckpointManager
from steelseg_hpc.training.config import load_saved_config
from steelseg_hpc.training.weights import WEIGHTS_FILE, WeightsMeta, load_model

log = logging.getLogger(__name__)

# Distinct colours for up to 10 classes (class index -> RGB).
PALETTE = np.array([
    [0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
    [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60],
], dtype=np.uint8)


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.tolist() if value.ndim else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def overlay_png(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray) -> bytes:
    """One PNG: the grey image, the truth and the prediction side by side, classes coloured."""
    import io

    from PIL import Image

    grey = np.repeat(image[..., None], 3, axis=2)
    palette = PALETTE[np.arange(256) % len(PALETTE)]
    panels = np.concatenate([grey, palette[truth], palette[prediction]], axis=1)
    buffer = io.BytesIO()
    Image.fromarray(panels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


#: ``evaluate --checkpoint`` choices besides a tag.
CHECKPOINT_CHOICES = ("best", "latest")


def select_checkpoint(run_dir: Path, which: str = "best") -> tuple[str, Path]:
    """The tag and weights file to evaluate: the best, the newest intact, or a named one.

    Nothing is substituted silently: a missing or damaged best checkpoint is an error that says
    which checkpoint ``--checkpoint latest`` would use instead.

    Raises:
        TrainingError: no such checkpoint, or its files differ from their manifest.
    """
    manager = CheckpointManager(RunFiles(run_dir).checkpoints, is_main=False)
    latest = manager.resume_tag()
    fallback = f"; evaluate --checkpoint latest uses {latest}" if latest else ""
    if which == "best":
        tag = manager.best_tag()
        if tag is None:
            raise TrainingError(f"{run_dir}: no best checkpoint (never validated, or its pointer is "
                                f"damaged){fallback}")
    elif which == "latest":
        tag = latest
        if tag is None:
            raise TrainingError(f"{run_dir}: no intact checkpoint; train the run first")
    else:
        tag = which
    if not (manager.root / tag).is_dir():
        known = ", ".join(manager.complete_tags()) or "none"
        raise TrainingError(f"{run_dir}: no checkpoint {tag!r} (checkpoints: {known})")
    if not manager.verify(tag):
        raise TrainingError(f"{run_dir}: checkpoint {tag} is damaged (its files differ from their "
                            f"manifest){fallback if tag != latest else ''}")
    return tag, manager.root / tag / WEIGHTS_FILE


def load_trained_model(run_dir: Path, which: str = "best") -> tuple[torch.nn.Module, str, WeightsMeta]:
    """The run's model with its chosen weights, in eval mode: ``(model, tag, weights metadata)``.

    A SAM_LoRA run's checkpoint holds only the trained tensors: the frozen rest is rebuilt from
    the base checkpoint it names (which must be unchanged).
    """
    tag, path = select_checkpoint(Path(run_dir), which)
    model, meta = load_model(path)
    return model, tag, meta


def run_store(run_dir: Path, store: str | Path | None = None) -> StoreInfo:
    """The store a run trained on: the one given (checked to be the same), else the one it recorded.

    A run records its store's absolute path and identity; a relative ``data.store`` in its config
    is never resolved against today's working directory.

    Raises:
        DataError: the store is gone, or is another store than the run's.
    """
    info = read_run_info(run_dir)
    recorded = info.store if info is not None else {}
    if store is None:
        store = recorded.get("path") or load_saved_config(RunFiles(run_dir).config).data.store
        if not Path(store).exists():  # not "run prep": the store exists, elsewhere, and prep takes hours
            raise DataError(f"{run_dir}: the store it trained on, {store}, is gone (moved or deleted); "
                            f"pass --store NEW_PATH to evaluate on it where it is now")
    found = open_store(store)
    check_same_store(recorded, found, str(run_dir))
    return found


def make_predictor(model: torch.nn.Module):
    """``predict(tiles, masks) -> logits``: prompts from the truth for models that need it."""
    zero_loss = lambda logits, masks: logits.new_zeros(())  # noqa: E731 - the loss is discarded

    def predict(tiles: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        if hasattr(model, "loss_and_logits") and masks is not None:
            return model.loss_and_logits(tiles, masks, zero_loss)[1]
        out = model(tiles)
        return out[0] if isinstance(out, (list, tuple)) else out

    return predict


def evaluate_run(run_dir: Path, split: str = "test", tta: bool = False, checkpoint: str = "best",
                 store: str | Path | None = None) -> dict:
    """Sliding-window evaluation of a run's checkpoint on a split's whole images.

    Args:
        run_dir: A run directory written by :func:`~steelseg_hpc.training.train`.
        split: Store split whose whole images are evaluated.
        tta: Average predictions over flips (also on when the run's ``eval.tta`` is set).
        checkpoint: ``"best"`` (default), ``"latest"`` (the newest intact one) or a tag.
        store: The run's store at another path (default: where the run recorded it).

    Returns:
        ``{"split", "checkpoint", "checkpoint_choice", "tta", "store", "class_names", "overall":
        {pixel_accuracy, dice_macro, miou, dice_per_class, iou_per_class, confusion},
        "per_image": [{name, ...}], "output_dir"}``.

    Raises:
        ConfigError: not a run directory. DataError: another store, a split without whole images.
        TrainingError: no such checkpoint, or a damaged one.
    """
    run_dir = Path(run_dir)
    files = RunFiles(run_dir)
    if not files.config.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no {files.config.name}); train it first")
    config = load_saved_config(files.config)
    tta = tta or config.eval.tta
    store = run_store(run_dir, store)
    if split not in store.splits:
        raise UnknownSplitError(f"--split {split}: the store {store.path} has no such split (it has "
                        f"{', '.join(store.splits) or 'none'})")
    if not store.whole_images.get(split):
        with_whole = [name for name, count in store.whole_images.items() if count]
        raise DataError(f"--split {split}: the store keeps no whole images of it, only tiles (whole images: "
                        f"{', '.join(with_whole) or 'none'}; see the spec's whole_image_splits)")
    model, tag, meta = load_trained_model(run_dir, checkpoint)
    if meta.num_classes != store.num_classes:
        raise DataError(f"{run_dir} checkpoint {tag} predicts {meta.num_classes} classes but the store "
                        f"{store.path} has {store.num_classes}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    predict = make_predictor(model)
    out_dir = files.eval_dir(split, tta)
    overall = SegmentationMetrics(store.num_classes, store.class_names).to(device)
    per_image_metrics = SegmentationMetrics(store.num_classes, store.class_names).to(device)
    per_image = []
    for index, (name, image, mask) in enumerate(WholeImages(store.path, split)):
        truth = torch.from_numpy(mask.astype(np.int64)).to(device)
        logits = sliding_window_logits(
            torch.from_numpy(image.astype(np.float32) / 255.0), predict, tile=store.tile_size,
            num_classes=store.num_classes, overlap=config.eval.overlap,
            sigma_scale=config.eval.sigma_scale, batch_size=config.eval.batch_size,
            mask=torch.from_numpy(mask.astype(np.int64)), tta=tta, device=device)
        prediction = logits.argmax(dim=0)
        overall.update(prediction[None], truth[None])
        per_image_metrics.reset()
        per_image_metrics.update(prediction[None], truth[None])
        values = _plain(per_image_metrics.compute())
        per_image.append({"name": name, **{k: v for k, v in values.items() if k not in ("confusion", "class_names")}})
        if index < config.eval.overlays:
            png = overlay_png(image, mask, prediction.cpu().numpy().astype(np.uint8))
            safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)  # names may hold "group/stem"
            atomic_write_bytes(files.overlays(split, tta) / f"{index:04d}_{safe_name}.png", png)
    result = {
        "split": split, "checkpoint": tag, "checkpoint_choice": checkpoint, "tta": tta,
        "store": str(Path(store.path).absolute()), "class_names": store.class_names,
        "overall": _plain(overall.compute()), "per_image": per_image, "output_dir": str(out_dir),
    }
    atomic_write_json(files.eval_metrics(split, tta), result)
    return result
