"""Summary scores as a DA reviewer checks them: exact sphere quadrature, O-B/O-A normalised by
the observation error, per-variable biases, and WeatherBench 2's spread/skill."""

import json
import math

import numpy as np
import pytest
import torch
import xarray as xr
from torch_harmonics.quadrature import legendre_gauss_weights

from interfaces import metrics
from interfaces.harness import Experiment, run_experiment
from interfaces.hookspecs import hookimpl
from interfaces.models import sphere
from interfaces.models.base import Model
from interfaces.registry import build_registry


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
    times sigma_o = 0.5, which the old O-B (undivided, here 0.65) reported as the headline."""
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
    per-cycle RMSE, biased low by Jensen's inequality, and gave 1.08 here."""
    s, rec = linear_enkf.summary, linear_enkf.recorder
    keep = slice(s["burn_in"], s["cycles"])
    truth = linear_enkf.setup.truth[1:].numpy()[keep]
    mse = ((rec.analysis[keep] - truth) ** 2).mean(-1)
    assert s["skill"] == pytest.approx(math.sqrt(mse.mean()), rel=1e-12)
    assert s["spread"] == pytest.approx(math.sqrt(np.mean(rec.scalars["ensemble_spread"][keep] ** 2)), rel=1e-12)
    N = s["members"]
    assert s["spread_skill"] == pytest.approx(math.sqrt((N + 1) / N) * s["spread"] / s["skill"], rel=1e-12)
    assert s["spread_skill"] == pytest.approx(1.0, abs=0.035)  # 1.005
    _, Pa = _steady_kalman(linear_enkf.setup.model, linear_enkf.setup.operator)
    assert s["skill"] == pytest.approx(math.sqrt(float(Pa.diagonal().mean())), rel=0.03)
    # analysis_rmse keeps its definition: the time mean of the per-cycle RMSE.
    assert s["analysis_rmse"] == pytest.approx(float(np.sqrt(mse).mean()), rel=1e-12)


# --- a two-variable model: metres and metres per second ---------------------------------------------
class TwoFields(Model):
    """Height (m, std 50 about 1000) and wind (m s-1, std 2) as independent AR(1) fields on a
    ring of 12 points: variables whose units differ by a factor of 25, as h and u do on the sphere."""

    name = "twofields"
    description = "two independent AR(1) fields in m and m s-1 (scores test)"
    variables = ("h", "u")
    units = ("m", "m s-1")
    standard_names = ("", "")
    default_obs_std = (10.0, 0.5)
    state_shape = (2, 12)
    MEAN, STD, PHI = (1000.0, 0.0), (50.0, 2.0), 0.8

    def _scaled(self, z):
        mean = torch.tensor(self.MEAN, dtype=torch.float64)[:, None]
        return mean + torch.tensor(self.STD, dtype=torch.float64)[:, None] * z

    def forecast(self, ensemble, generator=None):
        z = (ensemble - self._scaled(torch.zeros(self.state_shape))) / torch.tensor(self.STD, dtype=torch.float64)[:, None]
        z = self.PHI * z
        if generator is not None:
            z = z + math.sqrt(1 - self.PHI ** 2) * torch.randn(z.shape, generator=generator, dtype=torch.float64)
        return self._scaled(z)

    def initial_states(self, n, generator):
        return self._scaled(torch.randn(n, *self.state_shape, generator=generator, dtype=torch.float64))

    def climatology(self, n):
        return self.initial_states(n, torch.Generator().manual_seed(5))

    def point_coords(self):
        return torch.arange(12, dtype=torch.float64)[:, None]

    def distance(self, a, b):
        return (a[:, :1] - b[:, :1].T).abs()


@pytest.fixture(scope="module")
def two_field_run(tmp_path_factory):
    class Plugin:
        @hookimpl
        def da_harness_register(self, registry):
            registry.add_model(TwoFields)

    out = tmp_path_factory.mktemp("two") / "run.nc"
    exp = Experiment(model="twofields", method="enkf", obs="every:2", members=10, cycles=40, burn_in=5, out=str(out))
    res = run_experiment(exp, build_registry(extra_plugins=[("twofields-plugin", Plugin())]))
    return res, xr.open_dataset(out)


def test_observation_departures_per_variable_and_normalised(two_field_run):
    res, ds = two_field_run
    s, op = res.summary, res.setup.operator
    keep = slice(s["burn_in"], s["cycles"])
    H = op.matrix().numpy()
    flat_b = np.stack([ds.background_h.values, ds.background_u.values], axis=1).reshape(ds.sizes["time"], -1)
    d = ds.obs_value.values - flat_b @ H.T  # (time, obs) O-B in the observations' units
    chan = op.channels.numpy()
    for v, name in enumerate(("h", "u")):
        per_cycle = np.sqrt((d[:, chan == v] ** 2).mean(1))
        assert np.allclose(ds[f"omb_rms_{name}"].values, per_cycle, rtol=1e-12)
        assert s[f"omb_rms_{name}"] == pytest.approx(np.sqrt((per_cycle[keep] ** 2).mean()), rel=1e-12)
        assert ds[f"omb_rms_{name}"].attrs["units"] == ("m", "m s-1")[v]
    normalised = np.sqrt(((d / ds.obs_std.values) ** 2).mean(1))
    assert np.allclose(ds.omb_norm.values, normalised, rtol=1e-12)
    assert s["omb_norm"] == pytest.approx(np.sqrt((normalised[keep] ** 2).mean()), rel=1e-12)
    assert ds.omb_norm.attrs["units"] == "1"
    # Metres and m/s are no longer pooled into one figure: the h departures alone would dominate it.
    assert "omb_rms" not in s and "omb_rms" not in ds
    assert 0 < s["oma_norm"] < s["omb_norm"]


def test_bias_per_variable_and_combined_as_the_rmse_is(two_field_run):
    res, ds = two_field_run
    s = res.summary
    keep = slice(s["burn_in"], s["cycles"])
    clim = res.setup.climatology
    scale = clim.var(0).mean(-1).sqrt().numpy()  # each variable's climatological std
    biases = []
    for v, name in enumerate(("h", "u")):
        bias = (ds[f"analysis_{name}"].values - ds[f"truth_{name}"].values)[keep].mean()
        assert s[f"analysis_bias_{name}"] == pytest.approx(bias, rel=1e-10)
        biases.append(bias / scale[v])
    assert s["analysis_bias"] == pytest.approx(math.sqrt(np.mean(np.square(biases))), rel=1e-10)
    # Normalised alike, so the bias can never exceed the RMSE (it did when metres met m/s).
    assert 0 <= s["analysis_bias"] <= s["analysis_rmse"]
    assert 0 <= s["background_bias"] <= s["background_rmse"]


def test_spread_skill_per_variable_and_combined(two_field_run):
    res, ds = two_field_run
    s, N = res.summary, res.summary["members"]
    keep = slice(s["burn_in"], s["cycles"])
    scale = res.setup.climatology.var(0).mean(-1).sqrt().numpy()
    spreads, skills = [], []
    for v, name in enumerate(("h", "u")):
        err = (ds[f"analysis_{name}"].values - ds[f"truth_{name}"].values)[keep]
        skill = math.sqrt((err ** 2).mean())
        spread = math.sqrt((ds[f"ensemble_spread_{name}"].values[keep] ** 2).mean())
        assert s[f"skill_{name}"] == pytest.approx(skill, rel=1e-10)
        assert s[f"spread_{name}"] == pytest.approx(spread, rel=1e-12)
        assert s[f"spread_skill_{name}"] == pytest.approx(math.sqrt((N + 1) / N) * spread / skill, rel=1e-10)
        spreads.append(spread / scale[v])
        skills.append(skill / scale[v])
    ratio = math.sqrt(np.mean(np.square(spreads))) / math.sqrt(np.mean(np.square(skills)))
    assert s["spread_skill"] == pytest.approx(math.sqrt((N + 1) / N) * ratio, rel=1e-10)


def test_run_file_states_how_each_summary_figure_is_aggregated(two_field_run):
    res, ds = two_field_run
    aggregation = json.loads(ds.attrs["aggregation"])
    summary = json.loads(ds.attrs["summary"])
    patterns = [p.strip().replace("<var>", var) for key in aggregation for p in key.split(",") for var in ("h", "u")]
    scores = [k for k in summary if k.split("_")[0] in ("analysis", "background", "spread", "skill", "crps", "omb", "oma")]
    assert scores and all(k in patterns for k in scores), [k for k in scores if k not in patterns]
    assert "Jensen" not in aggregation["analysis_rmse"] and "time mean" in aggregation["analysis_rmse"]
