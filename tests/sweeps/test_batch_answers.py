"""The batch-size answers say yes or no only beyond the seeds' spread; otherwise "not resolved", with the numbers."""
from __future__ import annotations

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution

from steelseg_hpc.sweeps.analysis import batch_analysis


def _trials(dice: dict[int, list[float]], b_simple: dict[int, float] | None = None) -> list:
    """Completed trials: for each batch size, one trial per seed with that val Dice."""
    trials = []
    for batch, values in dice.items():
        for seed, value in enumerate(values):
            trial = optuna.trial.create_trial(
                params={"batch": batch, "seed": seed}, values=[value],
                distributions={"batch": CategoricalDistribution(sorted(dice)), "seed": IntDistribution(0, 9)},
                user_attrs={"noise_scale_b_simple": [(b_simple or {}).get(batch)]})
            trial.number = len(trials)
            trials.append(trial)
    return trials


def _answer(trials, starts: str) -> str:
    (answer,) = [a for a in batch_analysis(trials, "batch")["answers"] if a.startswith(starts)]
    return answer


def test_one_seed_never_answers_yes_or_no():
    # The demo's claim "no: batch 2 has the best val Dice (0.978)" from one seed against 0.969.
    answer = _answer(_trials({2: [0.978], 8: [0.969], 32: [0.95]}), "Poor generalization")
    assert "not resolved with 1 seed(s)" in answer and "0.978" in answer and "0.969" in answer
    assert ": no:" not in answer and ": yes:" not in answer


def test_generalization_is_answered_only_beyond_two_sd_of_the_seeds():
    worse = _answer(_trials({2: [0.80, 0.81, 0.79], 32: [0.90, 0.91, 0.89]}), "Poor generalization")
    assert worse.startswith("Poor generalization of small batches: yes:")
    better = _answer(_trials({2: [0.95, 0.96, 0.94], 8: [0.90, 0.91, 0.89]}), "Poor generalization")
    assert better.startswith("Poor generalization of small batches: no: it generalizes better")
    close = _answer(_trials({2: [0.90, 0.95, 0.85], 32: [0.91, 0.96, 0.86]}), "Poor generalization")
    assert "not resolved (within seed noise)" in close


def test_noisy_gradients_needs_more_than_one_measurement_and_agreement():
    single = _answer(_trials({2: [0.9], 8: [0.9]}, b_simple={8: 12.7}), "Noisy gradients")
    assert "not resolved" in single and "12.7" in single
    agreed = _answer(_trials({2: [0.9], 8: [0.9], 32: [0.9]}, b_simple={2: 11.9, 8: 12.4, 32: 13.1}), "Noisy gradients")
    assert "yes for batch sizes [2, 8]" in agreed and "no for batch sizes [32]" in agreed
    spread = _answer(_trials({2: [0.9], 8: [0.9], 32: [0.9]}, b_simple={2: 5.0, 8: 40.0}), "Noisy gradients")
    assert "yes for batch sizes [2]" in spread and "not resolved for batch sizes [8, 32]" in spread


def test_a_b_crit_far_from_b_simple_is_said_not_hidden():
    from steelseg_hpc.sweeps.analysis import _batch_answers, points

    trials = _trials({2: [0.9], 8: [0.9]})
    by_batch = {p.params["batch"]: p for p in points(trials)}
    table = [{"batch": 2, "b_simple_median": 3.0}, {"batch": 8, "b_simple_median": 3.0}]
    (far,) = [a for a in _batch_answers(table, by_batch, 30.0, 20.0, 40.0) if a.startswith("B_crit vs")]
    assert "10.00x" in far and "outside the factor of about 2" in far
    (near,) = [a for a in _batch_answers(table, by_batch, 4.5, 3.0, 6.0) if a.startswith("B_crit vs")]
    assert "within the factor of about 2" in near
