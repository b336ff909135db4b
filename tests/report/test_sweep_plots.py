"""The sweep report's batch plots stay readable at every batch range: no two tick labels overlap."""
from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")
import optuna  # noqa: E402
import pytest  # noqa: E402
from optuna.distributions import CategoricalDistribution, FloatDistribution  # noqa: E402

from steelseg_hpc.report.sweep import batch_lr_figure, critical_batch_figure  # noqa: E402


def _result(batches: list[int]) -> dict:
    s_min, e_min = 120.0, 1500.0
    rows = [{"batch": b, "mean": 0.8 + 0.001 * b, "sd": 0.01, "steps_to_target": s_min + e_min / b,
             "tiles_to_target": (s_min + e_min / b) * b} for b in batches]
    return {"batches": rows, "b_crit": e_min / s_min, "s_min": s_min, "e_min": e_min, "target": 0.9}


def _trials(batches: list[int]) -> list:
    lrs = (1e-3, 3e-3)
    return [optuna.trial.create_trial(params={"batch": b, "lr": lr}, values=[0.8 + 0.001 * b],
                                      distributions={"batch": CategoricalDistribution(batches),
                                                     "lr": FloatDistribution(1e-4, 1e-1, log=True)})
            for b in batches for lr in lrs]


def _overlapping_labels(figure) -> list[tuple[str, str]]:
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    clashes = []
    for axis in figure.axes:
        for ticks in (axis.xaxis, axis.yaxis):
            labels = [label for label in ticks.get_ticklabels(which="both") if label.get_visible() and label.get_text()]
            boxes = [(label.get_text(), label.get_window_extent(renderer)) for label in labels]
            clashes += [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]
    return clashes


@pytest.mark.parametrize("batches", [[1, 2, 4, 8, 16, 32, 64], [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64],
                                     [2, 8, 32], [4, 8], [6, 12]])
def test_no_tick_labels_overlap_in_the_batch_plots(batches):
    for figure in (critical_batch_figure(_result(batches)), batch_lr_figure(_trials(batches), "batch", "lr")):
        assert _overlapping_labels(figure) == []
        shown = {label.get_text() for label in figure.axes[0].xaxis.get_ticklabels() if label.get_visible()}
        assert str(batches[0]) in shown and str(batches[-1]) in shown  # the batch sizes, in plain numbers
