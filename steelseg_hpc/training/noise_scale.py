"""The simple gradient noise scale B_simple = tr(Σ) / |G|² (McCandlish et al. 2018, App. A).

Given squared norms of mean gradients measured at two batch sizes ``b_small < b_big``,

    E|G_B|² = |G|² + tr(Σ) / B

so each optimiser step yields unbiased estimates

    |G|²  ≈ (b_big |G_big|² - b_small |G_small|²) / (b_big - b_small)
    tr(Σ) ≈ (|G_small|² - |G_big|²) / (1 / b_small - 1 / b_big).

Both are noisy (|G|² can even be negative for one step), so exponential moving averages of the two
are kept separately and only their ratio is reported. In training, ``G_small`` is one rank's
micro-batch gradient (measured by tensor hooks, before any all-reduce) and ``G_big`` the gradient of
the whole optimiser step (accumulated over micro-batches and averaged over ranks).

Example:
    >>> est = GradientNoiseScale(b_small=4, b_big=16, ema_decay=0.0)
    >>> est.update(small_sq_norm=1.0 + 8.0 / 4, big_sq_norm=1.0 + 8.0 / 16)  # |G|²=1, tr(Σ)=8
    >>> round(est.b_simple(), 6)
    8.0
"""
from __future__ import annotations

import math
from typing import Iterable

import torch


class GradientNoiseScale:
    """Bias-corrected EMAs of |G|² and tr(Σ) from squared gradient norms at two batch sizes."""

    def __init__(self, b_small: float, b_big: float, ema_decay: float = 0.95):
        if not b_big > b_small > 0:
            raise ValueError(f"need b_big > b_small > 0, got {b_small=} {b_big=}")
        self.b_small, self.b_big, self.ema_decay = float(b_small), float(b_big), ema_decay
        self._ema_g2 = 0.0
        self._ema_trace = 0.0
        self._weight = 0.0  # 1 - decay**n: the EMAs' bias correction

    def update(self, small_sq_norm: float, big_sq_norm: float) -> None:
        """Add one step's squared norms: mean of the small-batch ones, and the big batch's."""
        if not (math.isfinite(small_sq_norm) and math.isfinite(big_sq_norm)):
            return
        g2 = (self.b_big * big_sq_norm - self.b_small * small_sq_norm) / (self.b_big - self.b_small)
        trace = (small_sq_norm - big_sq_norm) / (1.0 / self.b_small - 1.0 / self.b_big)
        decay = self.ema_decay
        self._ema_g2 = decay * self._ema_g2 + (1 - decay) * g2
        self._ema_trace = decay * self._ema_trace + (1 - decay) * trace
        self._weight = decay * self._weight + (1 - decay)

    def estimates(self) -> tuple[float, float] | None:
        """Bias-corrected (|G|², tr(Σ)), or None before the first update."""
        if self._weight == 0.0:
            return None
        return self._ema_g2 / self._weight, self._ema_trace / self._weight

    def b_simple(self) -> float | None:
        """tr(Σ) / |G|², or None when unknown or |G|² is not yet positive."""
        est = self.estimates()
        if est is None or est[0] <= 0:
            return None
        return est[1] / est[0]

    def state_dict(self) -> dict[str, float]:
        return {"ema_g2": self._ema_g2, "ema_trace": self._ema_trace, "weight": self._weight}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self._ema_g2, self._ema_trace = state["ema_g2"], state["ema_trace"]
        self._weight = state["weight"]


class MicroBatchGradProbe:
    """Sums a rank's squared gradient norm per backward, via hooks that run before all-reduce.

    The hooks see the gradient of the loss that ``backward`` was called with, so callers that
    scale the loss (DeepSpeed divides it by the accumulation steps) pass ``loss_scale`` to undo it.
    """

    def __init__(self, parameters: Iterable[torch.nn.Parameter]):
        self._norms: list[torch.Tensor] = []
        self._handles = [p.register_hook(self._hook) for p in parameters if p.requires_grad]

    def _hook(self, grad: torch.Tensor) -> None:
        # One kernel per parameter and nothing else: the hooks run inside every backward.
        self._norms.append(torch.linalg.vector_norm(grad.detach(), dtype=torch.float32))

    def pop(self, loss_scale: float = 1.0) -> float | None:
        """The squared norm of the last backward's gradient (unscaled), then reset."""
        if not self._norms:
            return None
        value = float(torch.stack(self._norms).square().sum()) / (loss_scale * loss_scale)
        self._norms = []
        return value

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def grad_sq_norm(parameters: Iterable[torch.nn.Parameter]) -> float | None:
    """Squared norm of the ``.grad`` of ``parameters`` (None when no parameter has one)."""
    grads = [p.grad.detach().float() for p in parameters if p.grad is not None]
    if not grads:
        return None
    return float(sum(g.pow(2).sum() for g in grads))
