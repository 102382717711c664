"""Summary scores as a DA reviewer checks them: exact sphere quadrature, O-B/O-A normalised by
the observation error, per-variable biases, and WeatherBench 2's spread/skill."""

import math

import numpy as np
import pytest
import torch
from torch_harmonics.quadrature import legendre_gauss_weights

from interfaces import metrics
from interfaces.harness import Experiment, run_experiment
from interfaces.models import sphere


# --- area weights on the sphere -----------------------------------------------------------------
@pytest.mark.parametrize("nlat", [8, 32, 64])
def test_sphere_weights_are_the_gauss_legendre_weights(nlat):
    lat, _ = sphere.gaussian_grid(nlat, 2 * nlat)
    w = sphere.quadrature_weights(nlat)
    mu, q = legendre_gauss_weights(nlat)  # nodes and weights on [-1, 1], ascending in mu
    order = torch.as_tensor(mu).argsort(descending=True)  # rows run north to south
    assert torch.allclose(torch.sin(lat), torch.as_tensor(mu, dtype=torch.float64)[order], atol=1e-13)
    q = torch.as_tensor(q, dtype=torch.float64)[order]
    assert torch.allclose(w, q / q.mean(), rtol=1e-12, atol=0)
    assert w.mean().item() == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("nlat", [16, 32])
def test_area_means_integrate_polynomials_in_mu_exactly(nlat):
    """The sphere mean of mu**k is 1/(k+1) for even k; Y_2^0 ~ 3 mu**2 - 1 has mean zero. The
    quadrature weights get both to round-off up to degree 2 nlat - 1; the cell-boundary weights
    used before miss by ~1e-4 (32 rows), a bias the size of a small analysis error."""
    lat, _ = sphere.gaussian_grid(nlat, 2 * nlat)
    mu = torch.sin(lat)
    new, old = sphere.quadrature_weights(nlat), sphere.cell_boundary_weights(lat)
    for k in (2, 4, 2 * nlat - 2):
        exact = 1.0 / (k + 1)
        assert (new * mu**k).mean().item() == pytest.approx(exact, abs=1e-14)
        assert abs((old * mu**k).mean().item() - exact) > 1e-5
    assert abs((new * (3 * mu**2 - 1)).mean().item()) < 1e-14
    assert abs((old * (3 * mu**2 - 1)).mean().item()) > 1e-4


def test_shallow_water_area_weights_use_the_quadrature():
    from interfaces.models.sw import ShallowWater

    model = ShallowWater()  # building it runs no dynamics (spin-up is lazy)
    nlat, nlon = model.state_shape[1:]
    w = model.area_weights()
    assert torch.allclose(w[:, 0], sphere.quadrature_weights(nlat), rtol=1e-14, atol=0)
    assert torch.equal(w, w[:, :1].expand(nlat, nlon))


# --- O-B / O-A normalised by the observation error -------------------------------------------------
def test_departures_are_normalised_by_each_observation_error():
    y = torch.tensor([1.0, 2.0, 30.0], dtype=torch.float64)
    hx = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    std = torch.tensor([1.0, 2.0, 30.0], dtype=torch.float64)
    # By hand: each departure is one of its std, so the normalised RMS is 1; in physical units
    # the 30 m departure dominates: sqrt((1 + 4 + 900) / 3).
    assert metrics.departures_rms(y, hx, std) == pytest.approx(1.0, abs=1e-15)
    assert metrics.departures_rms(y, hx) == pytest.approx(math.sqrt(905 / 3), rel=1e-15)


def _steady_kalman(model, operator):
    """Steady forecast and analysis covariances of the exact Kalman filter for a fixed network."""
    from baselines import kalman

    n = model.state_shape[0]
    H, R = operator.matrix(), torch.diag(operator.std ** 2)
    zero_x, zero_y = torch.zeros(n, dtype=torch.float64), torch.zeros(operator.n_obs, dtype=torch.float64)
    Pa = model.P_clim.clone()
    for _ in range(300):
        _, Pf = kalman.forecast(zero_x, Pa, model.M, model.Q)
        _, Pa = kalman.analysis(zero_x, Pf, H, R, zero_y)
    return Pf, Pa


@pytest.fixture(scope="module")
def linear_enkf():
    """A large-ensemble EnKF on the linear-Gaussian testbed: close to the exact Kalman filter."""
    exp = Experiment(model="linear", method="enkf", obs="every:2", obs_std="0.5", members=200,
                     cycles=500, burn_in=50, method_options={"inflation": "1.0"})
    return run_experiment(exp)


def test_normalised_omb_and_oma_match_the_kalman_filter(linear_enkf):
    """A well-tuned filter's normalised O-B is sqrt(1 + mean HPfH^T/R), its O-A
    sqrt(1 - mean HPaH^T/R) (the steady Kalman covariances). The physical-unit RMS is that
    times sigma_o = 0.5, which the old O-B (undivided, here 0.66) reported as the headline."""
    s, setup_ = linear_enkf.summary, linear_enkf.setup
    op = setup_.operator
    Pf, Pa = _steady_kalman(setup_.model, op)
    H, var_o = op.matrix(), op.std ** 2
    expected_omb = math.sqrt(1 + float(((H @ Pf @ H.T).diagonal() / var_o).mean()))
    expected_oma = math.sqrt(1 - float(((H @ Pa @ H.T).diagonal() / var_o).mean()))
    assert s["omb_norm"] == pytest.approx(expected_omb, rel=0.03)  # 1.30 (expected 1.297)
    assert s["oma_norm"] == pytest.approx(expected_oma, rel=0.03)  # 0.80 (expected 0.802)
    assert s["omb_rms"] == pytest.approx(0.5 * s["omb_norm"], rel=1e-12)
    assert s["oma_rms"] == pytest.approx(0.5 * s["oma_norm"], rel=1e-12)


def test_spread_skill_is_weatherbench2s_ratio_of_time_mean_variances(linear_enkf):
    """spread/skill = sqrt((N+1)/N) sqrt(mean var) / sqrt(mean MSE): ~1 for this nearly exact
    filter, and skill is the Kalman analysis RMS. The old ratio divided by the time mean of the
    per-cycle RMSE, biased low by Jensen's inequality, and gave 1.06 here."""
    s, rec = linear_enkf.summary, linear_enkf.recorder
    keep = slice(s["burn_in"], s["cycles"])
    truth = linear_enkf.setup.truth[1:].numpy()[keep]
    mse = ((rec.analysis[keep] - truth) ** 2).mean(-1)
    assert s["skill"] == pytest.approx(math.sqrt(mse.mean()), rel=1e-12)
    assert s["spread"] == pytest.approx(math.sqrt(np.mean(rec.scalars["ensemble_spread"][keep] ** 2)), rel=1e-12)
    N = s["members"]
    assert s["spread_skill"] == pytest.approx(math.sqrt((N + 1) / N) * s["spread"] / s["skill"], rel=1e-12)
    assert s["spread_skill"] == pytest.approx(1.0, abs=0.035)  # 0.99
    _, Pa = _steady_kalman(linear_enkf.setup.model, linear_enkf.setup.operator)
    assert s["skill"] == pytest.approx(math.sqrt(float(Pa.diagonal().mean())), rel=0.03)
    # analysis_rmse keeps its definition: the time mean of the per-cycle RMSE.
    assert s["analysis_rmse"] == pytest.approx(float(np.sqrt(mse).mean()), rel=1e-12)
