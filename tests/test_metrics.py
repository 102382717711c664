"""Scores against brute-force definitions."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from interfaces import metrics


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 12), size=st.integers(1, 6), seed=st.integers(0, 1000))
def test_fair_crps_matches_pairwise_definition(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    ens = torch.randn(n, size, generator=g, dtype=torch.float64)
    y = torch.randn(size, generator=g, dtype=torch.float64)
    w = torch.ones(size, dtype=torch.float64)
    skill = (ens - y).abs().mean(0)
    pair = (ens[:, None] - ens[None]).abs().sum((0, 1)) / (2 * n * (n - 1)) if n > 1 else 0
    assert torch.allclose(metrics.crps_fair(ens, y, w)[0], (skill - pair).mean())


def test_crps_of_a_point_forecast_is_mean_absolute_error():
    ens, y = torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([0.0, 0.0], dtype=torch.float64)
    assert metrics.crps_fair(ens, y, torch.ones(2, dtype=torch.float64)).item() == 1.5


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 1000), c=st.floats(-5, 5))
def test_rmse_and_bias_of_a_constant_error(seed, c):
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(3, 4, 8, generator=g, dtype=torch.float64)
    w = torch.rand(4, 8, generator=g, dtype=torch.float64) + 0.1
    w = w / w.mean()
    r = metrics.rmse(truth + c, truth, w, has_channels=True)
    assert torch.allclose(r, torch.full((3,), abs(c), dtype=torch.float64))
    assert torch.allclose(metrics.bias(truth + c, truth, w, True), torch.full((3,), c, dtype=torch.float64))


def test_area_weights_change_the_rmse():
    truth = torch.zeros(1, 2, 1, dtype=torch.float64)
    est = torch.tensor([[[1.0], [0.0]]], dtype=torch.float64)
    w = torch.tensor([[1.5], [0.5]], dtype=torch.float64)
    assert torch.allclose(metrics.rmse(est, truth, w, True), torch.tensor([0.75]).sqrt().double())


def test_spread_skill_and_combine():
    assert metrics.spread_skill(1.0, 1.0, 3) == (4 / 3) ** 0.5
    per_var = torch.tensor([[2.0, 4.0]], dtype=torch.float64)
    assert torch.allclose(metrics.combine(per_var, torch.tensor([2.0, 4.0])), torch.tensor([1.0], dtype=torch.float64))
    assert torch.allclose(metrics.combine(per_var[:, :1], None), torch.tensor([2.0], dtype=torch.float64))


def test_spread_skill_of_a_perfect_mean_is_not_a_crash():
    # A zero skill (the mean hits the truth) used to raise ZeroDivisionError after a whole run.
    assert metrics.spread_skill(0.5, 0.0, 10) == float("inf")
    assert math.isnan(metrics.spread_skill(0.0, 0.0, 10))


def test_normalised_departures_weigh_each_variable_by_its_error():
    # 3 m of O-B with a 3 m error and 0.5 m/s with a 0.5 m/s error are equally good fits;
    # pooled in physical units the metres would swamp the winds.
    y = torch.tensor([3.0, 0.5], dtype=torch.float64)
    assert metrics.departures_rms(y, torch.zeros(2, dtype=torch.float64), torch.tensor([3.0, 0.5], dtype=torch.float64)) == 1.0
