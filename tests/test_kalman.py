"""The reference Kalman filter, checked against closed forms and its own consistency."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from baselines import kalman
from interfaces.models.linear import LinearGaussian


def _spd(n, gen, floor=0.1):
    A = torch.randn(n, n, generator=gen, dtype=torch.float64)
    return A @ A.T / n + floor * torch.eye(n, dtype=torch.float64)


@given(st.floats(-5, 5), st.floats(0.01, 10), st.floats(0.01, 10), st.floats(-5, 5))
def test_scalar_update(m, p, r, y):
    mean, cov = kalman.analysis(torch.tensor([m], dtype=torch.float64), torch.tensor([[p]], dtype=torch.float64),
                                torch.ones(1, 1, dtype=torch.float64), torch.tensor([[r]], dtype=torch.float64),
                                torch.tensor([y], dtype=torch.float64))
    assert abs(mean.item() - (m + p / (p + r) * (y - m))) <= 1e-12 * (1 + abs(m) + abs(y))
    assert abs(cov.item() - p * r / (p + r)) <= 1e-12 * p


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_update_matches_information_form(n, p, seed):
    gen = torch.Generator().manual_seed(seed)
    P, R = _spd(n, gen), _spd(p, gen)
    H = torch.randn(p, n, generator=gen, dtype=torch.float64)
    xb, y = torch.randn(n, generator=gen, dtype=torch.float64), torch.randn(p, generator=gen, dtype=torch.float64)
    xa, Pa = kalman.analysis(xb, P, H, R, y)
    info = torch.linalg.inv(P) + H.T @ torch.linalg.solve(R, H)
    torch.testing.assert_close(Pa, torch.linalg.inv(info), rtol=1e-8, atol=1e-10)
    rhs = torch.linalg.solve(P, xb) + H.T @ torch.linalg.solve(R, y)
    torch.testing.assert_close(xa, torch.linalg.solve(info, rhs), rtol=1e-8, atol=1e-10)
    assert torch.linalg.eigvalsh(Pa).min() >= -1e-12


def test_forecast():
    gen = torch.Generator().manual_seed(1)
    M, P, Q = torch.randn(4, 4, generator=gen, dtype=torch.float64), _spd(4, gen), _spd(4, gen)
    x = torch.randn(4, generator=gen, dtype=torch.float64)
    xf, Pf = kalman.forecast(x, P, M, Q)
    torch.testing.assert_close(xf, M @ x)
    torch.testing.assert_close(Pf, M @ P @ M.T + Q)


def test_cycled_filter_is_statistically_consistent():
    # Normalised analysis errors e^T Pa^-1 e average n (chi-square with n degrees of freedom)
    # when the filter is exact; 600 cycles put the mean within a few percent.
    model = LinearGaussian(size=6)
    n = 6
    gen = torch.Generator().manual_seed(3)
    H = torch.eye(n, dtype=torch.float64)[::2]
    R = 0.5 * torch.eye(3, dtype=torch.float64)
    truth = model.initial_states(1, gen)[0]
    kf = kalman.KalmanFilter(model.M, model.Q, torch.zeros(n, dtype=torch.float64), model.P_clim.clone())
    stats = []
    for k in range(700):
        truth = model.forecast(truth[None], gen)[0]
        kf.forecast()
        y = H @ truth + R.diagonal().sqrt() * torch.randn(3, generator=gen, dtype=torch.float64)
        kf.update(H, R, y)
        e = truth - kf.mean
        if k >= 100:
            stats.append((e @ torch.linalg.solve(kf.cov, e)).item())
    mean_stat = sum(stats) / len(stats)
    # Standard error of the mean of 600 chi2_n draws (correlated in time: allow 5 of them x 2).
    assert abs(mean_stat - n) < 10 * (2 * n / len(stats)) ** 0.5
