"""``steelseg-hpc sweep report NAME``: a sweep's plots (PNG), a JSON summary and a rich table.

What is plotted depends on what the sweep varied (the study records its space):

- a LoRA-rank sweep: val Dice (mean ± sd over seeds) vs rank, with trainable parameters, peak
  memory and seconds per epoch;
- a batch-size sweep: val Dice over batch x learning rate, the best Dice per batch size,
  steps-to-target and tiles-to-target vs batch with the fitted McCandlish curve and B_crit, and
  B_simple over training;
- every sweep: Optuna's optimisation history and parameter importances; the Pareto front when
  the sweep has two objectives.

Example:
    >>> result = sweep_report(study, Path("runs/lora-rank/report"))  # doctest: +SKIP
    >>> result["plots"]  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a login node
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from steelseg_hpc.core.io import atomic_write_json  # noqa: E402
from steelseg_hpc.sweeps import analysis  # noqa: E402
from steelseg_hpc.sweeps.config import GLOBAL_BATCH  # noqa: E402
from steelseg_hpc.sweeps.outcome import cost_header  # noqa: E402
from steelseg_hpc.sweeps.record import read_record  # noqa: E402
from steelseg_hpc.sweeps.tally import tally_trials  # noqa: E402

log = logging.getLogger(__name__)
_RANK_KEY = "model.rank"


def _save(figure, path: Path, plots: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    plots.append(str(path))


def _kind(space: dict[str, str]) -> tuple[str, str | None]:
    for name, key in space.items():
        if key == GLOBAL_BATCH:
            return "batch-lr", name
    for name, key in space.items():
        if key == _RANK_KEY:
            return "lora-rank", name
    return "generic", None


def _rank_plots(rows: list[dict], param: str, out: Path, plots: list[str]) -> None:
    labels = [str(row[param]) for row in rows]
    x = list(range(len(rows)))
    figure, (dice_axis, cost_axis) = plt.subplots(1, 2, figsize=(11, 4))
    dice_axis.errorbar(x, [row["mean"] for row in rows], yerr=[row["sd"] or 0 for row in rows], marker="o", capsize=3)
    for xi, row in zip(x, rows):
        if row["trainable_params"]:
            dice_axis.annotate(f"{row['trainable_params'] / 1e6:.2f} M", (xi, row["mean"]), textcoords="offset points",
                               xytext=(0, 8), ha="center", fontsize=7)
    dice_axis.set(xticks=x, xticklabels=labels, xlabel=f"{param} (0 = full fine-tuning)", ylabel="best val Dice",
                  title="val Dice vs rank (labels: trainable parameters)")
    memory = [(row["peak_memory_mb"] or math.nan) / 1024 for row in rows]
    cost_axis.plot(x, memory, marker="s", color="tab:red", label="peak memory (GiB)")
    cost_axis.set(xticks=x, xticklabels=labels, xlabel=param, ylabel="peak memory (GiB)", title="cost per rank")
    time_axis = cost_axis.twinx()
    time_axis.plot(x, [row["seconds_per_epoch"] or math.nan for row in rows], marker="^", color="tab:green")
    time_axis.set_ylabel("seconds per epoch", color="tab:green")
    _save(figure, out / "rank.png", plots)


def label_batch_axis(axis, batches: list[int], which: str = "x") -> None:
    """A log2 batch axis labelled at the sweep's batch sizes in plain numbers, never overlapping.

    Matplotlib's own log axis labels minor ticks (2×10⁰, 3×10⁰, ...) over a range below a decade,
    which run into one unreadable line; here only the batch sizes are ticks, and a label that
    would touch the one before it is left out (its tick stays).
    """
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    target = axis.xaxis if which == "x" else axis.yaxis
    (axis.set_xscale if which == "x" else axis.set_yscale)("log", base=2)
    ticks = sorted({float(b) for b in batches if b and b > 0})
    target.set_major_locator(FixedLocator(ticks))
    target.set_minor_locator(NullLocator())
    target.set_minor_formatter(NullFormatter())
    (axis.set_xticklabels if which == "x" else axis.set_yticklabels)([f"{t:g}" for t in ticks])
    figure = axis.figure
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    kept = None
    for label in target.get_ticklabels():
        if not label.get_visible() or not label.get_text():
            continue
        box = label.get_window_extent(renderer).expanded(1.15, 1.0 if which == "x" else 1.4)
        if kept is not None and box.overlaps(kept):
            label.set_visible(False)
        else:
            kept = box


def quiet_log_axis(axis, which: str = "y") -> None:
    """A log axis with labels at its major ticks only (minor labels overlap on short ranges)."""
    from matplotlib.ticker import NullFormatter

    (axis.yaxis if which == "y" else axis.xaxis).set_minor_formatter(NullFormatter())


def batch_lr_figure(complete, batch_param: str, lr_param: str):
    """Each trial's best val Dice over its global batch and learning rate."""
    figure, axis = plt.subplots(figsize=(6, 4))
    scatter = axis.scatter([t.params[batch_param] for t in complete], [t.params[lr_param] for t in complete],
                           c=[t.values[0] for t in complete], cmap="viridis", s=60)
    axis.set(yscale="log", xlabel="global batch", ylabel="learning rate", title="val Dice over batch x lr")
    figure.colorbar(scatter, label="best val Dice")
    quiet_log_axis(axis)
    label_batch_axis(axis, [t.params[batch_param] for t in complete])
    return figure


def critical_batch_figure(result: dict):
    """Best Dice per batch size, steps and tiles to the target with the fitted B_crit curve."""
    batches = [row["batch"] for row in result["batches"]]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].errorbar(batches, [row["mean"] for row in result["batches"]], yerr=[row["sd"] or 0 for row in result["batches"]],
                     marker="o", capsize=3)
    axes[0].set(xlabel="global batch", ylabel="best val Dice (best lr)", title="best Dice per batch size")
    reached = [(row["batch"], row["steps_to_target"], row["tiles_to_target"]) for row in result["batches"]
               if row["steps_to_target"] is not None]
    if reached:
        axes[1].plot([b for b, _, _ in reached], [s for _, s, _ in reached], "o", label="measured")
        axes[2].plot([b for b, _, _ in reached], [e for _, _, e in reached if e is not None] or [math.nan] * len(reached),
                     "o", label="measured")
    if result.get("b_crit"):
        grid = [2 ** (i / 4) for i in range(0, 4 * int(math.log2(max(batches)) + 2))]
        s_min, e_min = result["s_min"], result["e_min"]
        axes[1].plot(grid, [s_min + e_min / b for b in grid], "-", label=f"S_min + E_min/B, B_crit {result['b_crit']:.1f}")
        axes[2].plot(grid, [s_min * b + e_min for b in grid], "-", label="E = S_min B + E_min")
        for axis in axes[1:]:
            axis.axvline(result["b_crit"], color="grey", linestyle=":")
    axes[1].set(yscale="log", xlabel="global batch", ylabel="optimiser steps to target",
                title=f"steps to {result.get('target', 0):.3f} val Dice")
    axes[2].set(yscale="log", xlabel="global batch", ylabel="tiles to target", title="tiles to target")
    for axis in axes[1:]:
        axis.legend(fontsize=7)
        quiet_log_axis(axis)
    figure.tight_layout()
    for axis in axes:
        label_batch_axis(axis, batches)
    return figure


def _batch_plots(result: dict, trials, batch_param: str, lr_param: str | None, out: Path, plots: list[str]) -> None:
    batches = [row["batch"] for row in result["batches"]]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if lr_param:
        _save(batch_lr_figure(complete, batch_param, lr_param), out / "batch_lr_heatmap.png", plots)
    _save(critical_batch_figure(result), out / "critical_batch.png", plots)
    figure, axis = plt.subplots(figsize=(6, 4))
    for row in result["batches"]:
        for series in row["b_simple_per_epoch"] or []:
            if series and any(v is not None for v in series):
                axis.plot(range(1, len(series) + 1), [v if v is not None else math.nan for v in series],
                          label=f"batch {row['batch']}")
                break
    for batch in batches:
        axis.axhline(batch, color="grey", linewidth=0.5, linestyle=":")
    axis.set(yscale="log", xlabel="epoch", ylabel="B_simple (tiles)", title="gradient noise scale over training")
    if axis.lines:
        axis.legend(fontsize=7)
    _save(figure, out / "b_simple.png", plots)


def _optuna_plots(study: optuna.Study, out: Path, plots: list[str]) -> None:
    from optuna.visualization import matplotlib as optuna_plots

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    multi = len(study.directions) > 1
    attempts = [("history.png", lambda: optuna_plots.plot_optimization_history(
        study, target=(lambda t: t.values[0]) if multi else None, target_name="val metric"))]
    if len(complete) >= 2 and len({repr(sorted(t.params.items())) for t in complete}) >= 2:
        attempts.append(("importances.png", lambda: optuna_plots.plot_param_importances(
            study, target=(lambda t: t.values[0]) if multi else None)))
    if multi and complete:
        cost = cost_header([t.user_attrs.get("cost_unit") or "cost" for t in complete])
        attempts.append(("pareto.png", lambda: optuna_plots.plot_pareto_front(
            study, target_names=["val metric", cost])))
    import warnings

    for name, make in attempts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks these plots experimental
                axis = make()
            _save(axis.figure if hasattr(axis, "figure") else axis.flat[0].figure, out / name, plots)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # too few trials for that plot
            log.info("no %s: %s", name, exc)


def sweep_report(study: optuna.Study, out: Path) -> dict[str, Any]:
    """Write the sweep's plots and ``summary.json`` into ``out``; return the summary."""
    out = Path(out)
    trials = study.get_trials(deepcopy=False)
    record = read_record(study)
    space, metric = record.space, record.metric
    kind, param = _kind(space)
    plots: list[str] = []
    result: dict[str, Any] = {"sweep": study.study_name, "kind": kind, "metric": metric,
                              "trials": tally_trials(trials, study.directions).counts,
                              "norm": record.norm, "arch": record.arch, "plots": plots}
    points = analysis.points(trials)
    result["points"] = [{"params": p.params, "mean": p.mean, "sd": p.sd, "n": p.n,
                         "trials": [t.number for t in p.trials], "duplicates": [t.number for t in p.duplicates]}
                        for p in points]
    result["notes"] = analysis.duplicate_notes(points)
    if points:
        top = max(points, key=lambda p: p.mean)
        result["best"] = {"params": top.params, "mean": top.mean, "sd": top.sd, "n": top.n}
    if kind == "lora-rank" and points:
        result["ranks"] = analysis.categorical_analysis(trials, param)
        _rank_plots(result["ranks"], param, out, plots)
    if kind == "batch-lr":
        lr_param = record.swept_key("optimizer.lr")
        result["batch"] = analysis.batch_analysis(trials, param, metric)
        result["answers"] = list(result["batch"]["answers"])
        result["answers"].append(f"Normalisation used: {record.norm} "
                                 + ("(BatchNorm at micro-batches of 1-2 adds noisy statistics to small batches)"
                                    if record.norm == "batch" else "(independent of the batch size)"))
        result["b_simple"] = {row["batch"]: row["b_simple_median"] for row in result["batch"]["batches"]}
        result["b_crit"] = result["batch"]["b_crit"]
        if result["batch"]["batches"]:
            _batch_plots(result["batch"], trials, param, lr_param, out, plots)
    if any(t.state == TrialState.COMPLETE for t in trials):
        _optuna_plots(study, out, plots)
    atomic_write_json(out / "summary.json", result)
    return result


def print_sweep_report(result: dict[str, Any], console: Console) -> None:
    """The summary as rich tables and sentences."""
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(result["trials"].items()))
    console.print(f"[bold]sweep {result['sweep']}[/] ({result['kind']}): {states}", highlight=False)
    rows = result.get("ranks") or result.get("batch", {}).get("batches") or []
    if rows:
        key = "batch" if result["kind"] == "batch-lr" else next(iter(rows[0]))
        table = Table(title=f"best {result['metric']} per {key} (mean ± sd over seeds)", title_justify="left")
        columns = ([key, "mean", "sd", "n", "trainable (M)", "peak mem (GiB)", "s/epoch"] if result["kind"] != "batch-lr"
                   else [key, "best lr point", "mean", "sd", "n", "B_simple", "steps to target", "tiles to target"])
        for column in columns:
            table.add_column(column, justify="right")
        for row in rows:
            f = lambda v, spec=".4f": "-" if v is None else format(v, spec)  # noqa: E731
            if result["kind"] != "batch-lr":
                table.add_row(str(row[key]), f(row["mean"]), f(row["sd"]), str(row["n"]),
                              f((row["trainable_params"] or 0) / 1e6 if row["trainable_params"] else None, ".2f"),
                              f((row["peak_memory_mb"] or 0) / 1024 if row["peak_memory_mb"] else None, ".2f"),
                              f(row["seconds_per_epoch"], ".1f"))
            else:
                table.add_row(str(row["batch"]), str({k: v for k, v in row["best_params"].items() if k != key}),
                              f(row["mean"]), f(row["sd"]), str(row["n"]), f(row["b_simple_median"], ".1f"),
                              f(row["steps_to_target"], ".0f"), f(row["tiles_to_target"], ".0f"))
        console.print(table)
    for answer in result.get("answers", []):
        console.print(f"• {answer}", highlight=False)
    for note in result.get("notes", []):
        console.print(f"note: {note}", highlight=False)
    if result.get("best"):
        console.print(f"best point: {result['best']['params']} -> {result['best']['mean']:.4f}", highlight=False)
    console.print(f"plots: {', '.join(result['plots']) or 'none yet'}", highlight=False)
