"""The inference stage: what is done with a trained run, between training and launch.

Whole-image sliding-window evaluation (``evaluate``, on ``stitching``) and the export of a run's
best weights for use outside the suite (``export``). Names are imported on first use.

Example:
    >>> from steelseg_hpc.inference import evaluate_run
    >>> result = evaluate_run(Path("runs/unet"), split="test")  # doctest: +SKIP
"""
from steelseg_hpc.core.lazy import lazy_exports

__all__ = ["evaluate_run", "export_run", "load_exported", "load_trained_model"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "evaluate_run": "evaluate",
    "load_trained_model": "evaluate",
    "export_run": "export",
    "load_exported": "export",
})
