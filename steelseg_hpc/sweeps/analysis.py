"""The numbers behind a sweep's report: points over seeds, the critical batch size, the answers.

- **Points**: trials with the same parameters but another seed form a point: mean, sd, n. A
  seed measured twice (the same run again) is one measurement: the first trial of each seed is
  pooled, the others are kept as the point's ``duplicates`` and named in the report.
- **B_crit** (McCandlish et al. 2018): for each batch size B (at its best learning rate), the
  optimiser steps S and training tiles E needed to first reach a target val Dice (default 95 %
  of the sweep's best; read from every evaluation point, epoch ends and the ``val_every_tiles``
  points between them, interpolated between the two that bracket the target) follow ``(S / S_min - 1)(E / E_min - 1) = 1``; with ``E = B S`` that is
  ``S = S_min + E_min / B``, a straight line in ``1 / B``. Least squares on relative errors gives
  ``S_min`` and ``E_min``; ``B_crit = E_min / S_min``; a parametric bootstrap of the fit gives its
  interval (checked to cover a planted B_crit in ≥ 90 % of simulated sweeps).
- **Answers**: one generated sentence each for "small batches give noisy gradients" (does the
  gradient noise scale B_simple exceed the small batch sizes?) and "... and generalize poorly"
  (is the best val Dice of the small batches lower than that of the best batch size, by more than
  the seeds' spread?). A claim is made only when the numbers support it.

Example:
    >>> fit = fit_critical_batch([1, 4, 16, 64], [1000 + 8000 / b for b in (1, 4, 16, 64)])
    >>> round(fit["s_min"]), round(fit["e_min"]), round(fit["b_crit"], 2)
    (1000, 8000, 8.0)
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from statistics import fmean, median, stdev
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from steelseg_hpc.core import rundir
from steelseg_hpc.core.rundir import MetricsRow

SEED = "seed"


@dataclass
class Point:
    """One point of the space (parameters without the seed) and its trials over seeds."""

    params: dict[str, Any]
    values: list[float] = field(default_factory=list)
    trials: list[FrozenTrial] = field(default_factory=list)
    duplicates: list[FrozenTrial] = field(default_factory=list)  # a seed already pooled, run again

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return fmean(self.values) if self.values else None

    @property
    def sd(self) -> float | None:
        return stdev(self.values) if len(self.values) > 1 else None

    def attr_mean(self, name: str) -> float | None:
        values = [t.user_attrs.get(name) for t in self.trials if isinstance(t.user_attrs.get(name), (int, float))]
        return fmean(values) if values else None

    def cost(self) -> tuple[float | None, str | None]:
        """The mean cost over the point's trials and its unit; (None, None) when their units differ
        (GPU-hours and CPU core-hours do not add up) or no trial recorded one."""
        units = {t.user_attrs.get("cost_unit") for t in self.trials}
        if len(units) != 1 or None in units:
            return None, None
        return self.attr_mean("cost"), units.pop()


def points(trials: list[FrozenTrial]) -> list[Point]:
    """Completed trials grouped by their parameters (distinct seeds pooled), in first-trial order."""
    grouped: dict[str, Point] = {}
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.state != TrialState.COMPLETE or not trial.values:
            continue
        params = {k: v for k, v in trial.params.items() if k != SEED}
        point = grouped.setdefault(repr(sorted(params.items())), Point(params))
        if SEED in trial.params and any(t.params.get(SEED) == trial.params[SEED] for t in point.trials):
            point.duplicates.append(trial)
            continue
        point.values.append(trial.values[0])
        point.trials.append(trial)
    return list(grouped.values())


def duplicate_notes(all_points: list[Point]) -> list[str]:
    """One sentence per point with a seed run more than once: which trials were left out of its mean."""
    notes = []
    for point in all_points:
        for trial in point.duplicates:
            first = next(t for t in point.trials if t.params.get(SEED) == trial.params[SEED])
            notes.append(f"trial {trial.number} repeats {point.params} with seed {trial.params[SEED]} (trial "
                         f"{first.number}): the same seed twice is one measurement, pooled once")
    return notes


def _weighted_line(xs: list[float], ys: list[float], weights: list[float]) -> tuple[float, float] | None:
    """Weighted least squares ``y = a + b x``; None when the xs do not vary."""
    total = sum(weights)
    mean_x = sum(w * x for w, x in zip(weights, xs)) / total
    mean_y = sum(w * y for w, y in zip(weights, ys)) / total
    spread = sum(w * (x - mean_x) ** 2 for w, x in zip(weights, xs))
    if spread <= 0:
        return None
    slope = sum(w * (x - mean_x) * (y - mean_y) for w, x, y in zip(weights, xs, ys)) / spread
    return mean_y - slope * mean_x, slope


def _fit_line(batches: list[float], steps: list[float]) -> tuple[float, float] | None:
    """``(S_min, E_min)`` of ``S = S_min + E_min / B``, fitted to relative errors.

    Steps-to-target scatter in proportion to their size (a seed changes them by some percent),
    so the points of small batches, whose steps are many, would dominate a plain least-squares
    fit. Each point is weighted by ``1 / S_fitted²`` (iterated from the plain fit): a fit of the
    relative errors.
    """
    xs = [1.0 / b for b in batches]
    line = _weighted_line(xs, steps, [1.0] * len(xs))
    for _ in range(3):
        if line is None:
            return None
        fitted = [line[0] + line[1] * x for x in xs]
        if min(fitted) <= 0:
            break
        line = _weighted_line(xs, steps, [1.0 / f ** 2 for f in fitted])
    return line


def fit_critical_batch(batches: list[float], steps: list[float]) -> dict[str, float | None]:
    """Fit ``S = S_min + E_min / B`` to steps-to-target (relative errors); ``B_crit = E_min / S_min``.

    Returns ``{"s_min", "e_min", "b_crit"}``; ``b_crit`` is None when the data do not define a
    positive ``S_min`` and ``E_min`` (fewer than two batch sizes, or steps that do not fall with B).
    """
    line = _fit_line(batches, steps) if len({float(b) for b in batches}) >= 2 else None
    if line is None:
        return {"s_min": None, "e_min": None, "b_crit": None}
    intercept, slope = line
    valid = slope > 0 and intercept > 0
    return {"s_min": intercept, "e_min": slope, "b_crit": slope / intercept if valid else None}


def bootstrap_critical_batch(batches: list[float], steps: list[float], rounds: int = 1000,
                             seed: int = 0) -> tuple[float | None, float | None]:
    """A 95 % interval of B_crit by a parametric bootstrap of the fit.

    The fitted curve plus multiplicative noise of the size the fit's own residuals show (their
    log-scale sd over ``n - 2`` degrees of freedom, and in each round a draw of that sd from its
    own uncertainty, so that few measurements give wide intervals) is measured again and refitted;
    the 2.5th and 97.5th percentiles of the refitted B_crit are the interval. Resampling the
    measurements themselves would be too narrow with one or two seeds per batch size (it covered
    a planted B_crit in about two thirds of simulated sweeps; this covers it in about 95 %).
    None when there are fewer than three measurements or the fit defines no B_crit.
    """
    fit = fit_critical_batch(batches, steps)
    dof = len(steps) - 2
    if fit["b_crit"] is None or dof < 1 or min(steps) <= 0:
        return None, None
    fitted = [fit["s_min"] + fit["e_min"] / b for b in batches]
    sigma = math.sqrt(sum(math.log(s / f) ** 2 for s, f in zip(steps, fitted)) / dof)
    rng = random.Random(seed)
    estimates = []
    for _ in range(rounds):
        drawn = sigma * math.sqrt(dof / max(sum(rng.gauss(0, 1) ** 2 for _ in range(dof)), 1e-12))
        again = fit_critical_batch(batches, [f * math.exp(rng.gauss(0, drawn)) for f in fitted])
        if again["b_crit"] is not None:
            estimates.append(again["b_crit"])
    if len(estimates) < rounds // 2:
        return None, None
    estimates.sort()
    return estimates[int(0.025 * len(estimates))], estimates[min(int(0.975 * len(estimates)), len(estimates) - 1)]


@dataclass(frozen=True)
class Reached:
    """Where a run first reached a target: optimiser steps and training tiles, interpolated."""

    steps: float
    tiles: float | None
    interpolated: bool  # between the two evaluation points that bracket the target (else: at a point)


def first_reaching(rows: list[MetricsRow], metric: str, target: float) -> Reached | None:
    """Steps and tiles at which ``metric`` first reaches ``target``, over every evaluation point.

    ``rows`` are a run's evaluation points in training order (epoch ends and, with
    ``val_every_tiles``, the points between them: ``read_metrics(..., every_point=True)``). The
    target is crossed between the last point below it and the first at or above it; the steps
    there are interpolated linearly in the metric between those two points, stated as such
    (``interpolated``). Reached at the first point already, that point's steps are returned.

    Example:
        >>> rows = [MetricsRow(step=10, val_dice=0.5, global_batch=8), MetricsRow(step=20, val_dice=0.9, global_batch=8)]
        >>> first_reaching(rows, "val_dice", 0.8)
        Reached(steps=17.5, tiles=140.0, interpolated=True)
    """
    points = sorted((row for row in rows if getattr(row, metric) is not None), key=lambda row: row.step)
    before = None
    for row in points:
        value = getattr(row, metric)
        if value >= target:
            batch = row.global_batch
            if before is None or getattr(before, metric) >= value:
                return Reached(float(row.step), None if batch is None else float(row.step * batch), False)
            low = getattr(before, metric)
            steps = before.step + (target - low) / (value - low) * (row.step - before.step)
            return Reached(steps, None if batch is None else steps * batch, True)
        before = row
    return None


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _spread(point: Point) -> str:
    return f"{_fmt(point.mean)} ± {_fmt(point.sd)}" if point.sd is not None else _fmt(point.mean)


def batch_analysis(trials: list[FrozenTrial], batch_param: str, metric: str = "val_dice",
                   target_fraction: float = 0.95) -> dict[str, Any]:
    """The batch-size answer: best lr per batch, B_simple, steps/tiles to target, B_crit, sentences."""
    all_points = points(trials)
    by_batch: dict[int, Point] = {}
    for point in all_points:
        batch = point.params[batch_param]
        if batch not in by_batch or (point.mean or -1) > (by_batch[batch].mean or -1):
            by_batch[batch] = point
    if not by_batch:
        return {"batches": [], "answers": ["no trial has completed yet"]}
    best_value = max(point.mean for point in by_batch.values())
    target = target_fraction * best_value
    rows_of = {t.number: rundir.read_metrics(t.user_attrs.get("run_dir", ""), every_point=True)
               for p in by_batch.values() for t in p.trials}
    table, fit_batches, fit_steps, fit_tiles = [], [], [], []
    for batch in sorted(by_batch):
        point = by_batch[batch]
        noise = [v for t in point.trials for v in (t.user_attrs.get("noise_scale_b_simple") or []) if v is not None]
        reached = [first_reaching(rows_of[t.number], metric, target) for t in point.trials]
        steps = [r.steps for r in reached if r is not None]
        tiles = [r.tiles for r in reached if r is not None and r.tiles is not None]
        for s in steps:
            fit_batches.append(batch)
            fit_steps.append(s)
        fit_tiles += tiles
        table.append({"batch": batch, "best_params": point.params, "mean": point.mean, "sd": point.sd, "n": point.n,
                      "b_simple_median": median(noise) if noise else None,
                      "steps_to_target": fmean(steps) if steps else None,
                      "tiles_to_target": fmean(tiles) if tiles else None,
                      "reached_target": f"{len(steps)}/{len(point.trials)}",
                      "interpolated": any(r is not None and r.interpolated for r in reached),
                      "evaluation_points": max((len(rows_of[t.number]) for t in point.trials), default=0),
                      "b_simple_per_epoch": [t.user_attrs.get("noise_scale_b_simple") for t in point.trials]})
    fit = fit_critical_batch(fit_batches, fit_steps)
    low, high = bootstrap_critical_batch(fit_batches, fit_steps) if fit["b_crit"] is not None else (None, None)
    return {"target": target, "target_fraction": target_fraction, "batches": table,
            "b_crit": fit["b_crit"], "b_crit_interval": [low, high], "s_min": fit["s_min"], "e_min": fit["e_min"],
            "answers": _batch_answers(table, by_batch, fit["b_crit"], low, high)}


def _noise_answer(table: list[dict]) -> str:
    """Noisy gradients: yes/no only where every batch size's B_simple measurement agrees."""
    measured = [(row["batch"], row["b_simple_median"]) for row in table if row["b_simple_median"] is not None]
    if not measured:
        return ("Noisy gradients: not measured: B_simple needs grad_accumulation >= 2 or several ranks in a "
                "trial.")
    values = [value for _, value in measured]
    low, high = min(values), max(values)
    shown = f"B_simple {low:.1f}" + (f" to {high:.1f}" if high > low else "") + \
        f" tiles over {len(measured)} batch size(s) measured"
    if len(measured) < 2:
        return (f"Noisy gradients: not resolved: {shown}; one measurement cannot tell the noise scale from "
                "its own scatter (every trial measures B_simple when grad_accumulation >= 2).")
    below = [row["batch"] for row in table if row["batch"] < low]
    above = [row["batch"] for row in table if row["batch"] > high]
    between = [row["batch"] for row in table if low <= row["batch"] <= high]
    parts = []
    if below:
        parts.append(f"yes for batch sizes {below}: below every B_simple measured, so their gradient "
                     "estimates are dominated by noise")
    if above:
        parts.append(f"no for batch sizes {above}: above every B_simple measured")
    if between:
        parts.append(f"not resolved for batch sizes {between}, within the measurements' range")
    return f"Noisy gradients ({shown}; B_simple is measured, not fitted): " + "; ".join(parts) + "."


def _generalisation_answer(by_batch: dict[int, Point]) -> str:
    """Poor generalization of small batches: yes/no only beyond the seeds' spread (2 sd)."""
    smallest = min(by_batch)
    best_batch = max(by_batch, key=lambda b: by_batch[b].mean)
    small = by_batch[smallest]
    # If the smallest batch scores best, the question is whether it beats the runner-up.
    other_batch = best_batch if best_batch != smallest else max(
        (b for b in by_batch if b != smallest), key=lambda b: by_batch[b].mean, default=None)
    if other_batch is None:
        return f"Poor generalization of small batches: not resolved: only batch {smallest} was trained."
    other = by_batch[other_batch]
    if small.sd is None or other.sd is None:
        return (f"Poor generalization of small batches: not resolved with {min(small.n, other.n)} seed(s): "
                f"batch {smallest} reaches {_spread(small)} and batch {other_batch} {_spread(other)} val Dice at "
                "their best lr; run more seeds to separate the difference from seed noise.")
    gap, noise_level = small.mean - other.mean, 2 * math.hypot(small.sd, other.sd)
    if abs(gap) <= noise_level:
        verdict = "not resolved (within seed noise)"
    else:
        verdict = "no: it generalizes better" if gap > 0 else "yes"
    return (f"Poor generalization of small batches: {verdict}: batch {smallest} reaches {_spread(small)} val Dice "
            f"at its best lr, batch {other_batch} {_spread(other)} ({small.n} and {other.n} seeds; difference "
            f"{gap:+.3f} vs 2 sd {noise_level:.3f}).")


def _batch_answers(table: list[dict], by_batch: dict[int, Point], b_crit, low, high) -> list[str]:
    answers = [_noise_answer(table)]
    if b_crit is not None:
        interval = f" (95 % interval {_fmt(low, '.1f')} to {_fmt(high, '.1f')})" if low is not None else ""
        read = ("steps to the target interpolated between the two evaluation points that bracket it"
                if any(row.get("interpolated") for row in table) else "steps to the target read at evaluation points")
        fewest = min((row.get("evaluation_points") or 0 for row in table), default=0)
        answers.append(f"Critical batch size B_crit = {b_crit:.1f} tiles{interval}: below it, doubling the batch "
                       "nearly halves the steps to the target; above it, larger batches mostly cost compute "
                       f"({read}; at least {fewest} point(s) per run).")
    else:
        answers.append("Critical batch size: not resolved (too few batch sizes reached the target, or their "
                       "steps did not fall with the batch size).")
    answers.append(_generalisation_answer(by_batch))
    noise = [row["b_simple_median"] for row in table if row["b_simple_median"] is not None]
    if b_crit is not None and noise:
        ratio = b_crit / median(noise)
        within = 0.5 <= ratio <= 2.0
        answers.append(f"B_crit vs B_simple: B_crit {b_crit:.1f} is {ratio:.2f}x the median B_simple {median(noise):.1f}; "
                       + ("within the factor of about 2 that McCandlish et al. (2018) report between them."
                          if within else "outside the factor of about 2 that McCandlish et al. (2018) report between "
                          "them: one of the two is not measuring what it should here (too few steps, a target "
                          "reached at the first evaluation, or B_simple from too few trials)."))
    return answers


def categorical_analysis(trials: list[FrozenTrial], param: str) -> list[dict[str, Any]]:
    """Per value of ``param`` (e.g. the LoRA rank): score over seeds and the costs it came with."""
    rows = []
    for point in sorted(points(trials), key=lambda p: (str(type(p.params.get(param))), p.params.get(param))):
        rows.append({param: point.params.get(param), "params": point.params, "mean": point.mean, "sd": point.sd,
                     "n": point.n, "trainable_params": point.attr_mean("trainable_params"),
                     "peak_memory_mb": point.attr_mean("peak_memory_mb"),
                     "seconds_per_epoch": point.attr_mean("seconds_per_epoch"),
                     **dict(zip(("cost", "cost_unit"), point.cost()))})
    return rows
