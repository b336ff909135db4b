"""The B_simple estimator recovers a known noise scale; the gradient probe measures micro-batches."""
import numpy as np
import pytest
import torch

from steelseg_hpc.training.noise_scale import GradientNoiseScale, MicroBatchGradProbe, grad_sq_norm


def test_recovers_known_noise_scale_on_synthetic_problem():
    # Per-sample gradients g_i = G + noise, noise ~ N(0, sigma^2 I_d): tr(Sigma) = d sigma^2.
    rng = np.random.default_rng(0)
    d, sigma, b_small, accumulation = 64, 1.5, 4, 8
    true_g = rng.normal(size=d)
    true_g *= np.sqrt(12.0) / np.linalg.norm(true_g)  # |G|^2 = 12
    expected = d * sigma**2 / 12.0  # B_simple = 12.0
    estimator = GradientNoiseScale(b_small, b_small * accumulation, ema_decay=0.999)
    for _ in range(4000):
        per_sample = true_g + sigma * rng.normal(size=(accumulation, b_small, d))
        micro_means = per_sample.mean(axis=1)
        small = float((micro_means**2).sum(axis=1).mean())
        big = float((micro_means.mean(axis=0) ** 2).sum())
        estimator.update(small, big)
    g2, trace = estimator.estimates()
    assert g2 == pytest.approx(12.0, rel=0.1)
    assert trace == pytest.approx(d * sigma**2, rel=0.1)
    assert estimator.b_simple() == pytest.approx(expected, rel=0.12)


def test_state_round_trip_and_unknown_before_updates():
    estimator = GradientNoiseScale(2, 8, ema_decay=0.9)
    assert estimator.b_simple() is None
    estimator.update(3.0, 1.5)
    copy = GradientNoiseScale(2, 8, ema_decay=0.9)
    copy.load_state_dict(estimator.state_dict())
    assert copy.estimates() == estimator.estimates()
    estimator.update(float("nan"), 1.0)  # ignored
    assert copy.estimates() == estimator.estimates()


def test_rejects_equal_batch_sizes():
    with pytest.raises(ValueError):
        GradientNoiseScale(4, 4)


def test_probe_measures_each_backward_before_accumulation():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(5))
    probe = MicroBatchGradProbe([weight])
    accumulation, norms = 3, []
    expected_grads = []
    for _ in range(accumulation):
        x = torch.randn(4, 5)
        loss = ((x @ weight) ** 2).mean()
        twin = weight.detach().clone().requires_grad_(True)  # the probe must not see this one
        expected_grads.append(torch.autograd.grad(((x @ twin) ** 2).mean(), twin)[0])
        (loss / accumulation).backward()  # the engine scales by 1 / accumulation
        norms.append(probe.pop(loss_scale=1.0 / accumulation))
    probe.remove()
    for got, grad in zip(norms, expected_grads):
        assert got == pytest.approx(float(grad.pow(2).sum()), rel=1e-5)
    assert grad_sq_norm([weight]) == pytest.approx(float(torch.stack(expected_grads).mean(0).pow(2).sum()), rel=1e-5)
    assert probe.pop() is None


def _least_squares_b_simple(delta: torch.Tensor, sigma: float) -> float:
    """Exact tr(Σ) / |G|² of ½(x·w - y)² with x ~ N(0, I_d), y = x·w* + N(0, σ²), at w = w* + δ.

    The per-example gradient is g = x (x·δ - ε): G = E g = δ and, by Isserlis' theorem,
    E ggᵀ = |δ|² I + 2 δδᵀ + σ² I, so tr(Σ) = tr(E ggᵀ) - |G|² = (d + 1) |δ|² + d σ².
    """
    d, g2 = delta.numel(), float(delta.pow(2).sum())
    return ((d + 1) * g2 + d * sigma**2) / g2


def _engine_fed_b_simple(model, w_star, sigma, micro, accumulation, steps, generator, ema_decay=0.995):
    """B_simple measured as the engine measures it: the probe's hooks see each micro-batch's
    backward of the loss DeepSpeed divides by the accumulation steps, and the big batch is the
    accumulated gradient of the optimiser step."""
    estimator = GradientNoiseScale(micro, micro * accumulation, ema_decay=ema_decay)
    probe = MicroBatchGradProbe(model.parameters())
    d = w_star.numel()
    for _ in range(steps):
        model.zero_grad()
        small_norms = []
        for _ in range(accumulation):
            x = torch.randn(micro, d, generator=generator)
            y = x @ w_star + sigma * torch.randn(micro, generator=generator)
            loss = 0.5 * (model(x).squeeze(1) - y).pow(2).mean() / accumulation
            loss.backward()
            small_norms.append(probe.pop(loss_scale=1.0 / accumulation))
        estimator.update(sum(small_norms) / len(small_norms), grad_sq_norm(model.parameters()))
    probe.remove()
    return estimator.b_simple()


def test_b_simple_matches_the_closed_form_of_least_squares_at_two_points_of_training():
    generator = torch.Generator().manual_seed(0)
    d, sigma, micro, accumulation = 16, 1.0, 4, 8
    w_star = torch.randn(d, generator=generator)
    model = torch.nn.Linear(d, 1, bias=False)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    with torch.no_grad():
        model.weight.copy_((w_star + 3.0 * torch.randn(d, generator=generator) / d**0.5).unsqueeze(0))
    measured = []
    for train_steps in (0, 30):  # early (gradient dominates) and after SGD has closed in (noise dominates)
        for _ in range(train_steps):
            optimiser.zero_grad()
            x = torch.randn(micro * accumulation, d, generator=generator)
            y = x @ w_star + sigma * torch.randn(micro * accumulation, generator=generator)
            (0.5 * (model(x).squeeze(1) - y).pow(2).mean()).backward()
            optimiser.step()
        exact = _least_squares_b_simple(model.weight.detach().squeeze(0) - w_star, sigma)
        got = _engine_fed_b_simple(model, w_star, sigma, micro, accumulation, steps=400, generator=generator)
        measured.append((got, exact))
    (early, early_exact), (late, late_exact) = measured
    assert late_exact > 2 * early_exact  # two genuinely different points
    assert early == pytest.approx(early_exact, rel=0.15)
    assert late == pytest.approx(late_exact, rel=0.15)
