"""The balanced multivariate B of 3D-Var on the sphere (baselines/balanced_b.py)."""

from __future__ import annotations

import math

import pytest
import torch

from baselines import balanced_b
from baselines.balanced_b import BalancedCovariance, fit
from interfaces.assimilator import Context
from interfaces.errors import UsageError
from interfaces.models.lorenz96 import Lorenz96
from interfaces.models.sw import ShallowWater
from interfaces.observations import build_operator


@pytest.fixture(scope="module")
def model():
    return ShallowWater()


def _true_statistics(model):
    L = model.dyn.lmax
    l = torch.arange(L, dtype=torch.float64)
    amp = torch.stack([2e6 * torch.exp(-l / 6), 3e5 * torch.exp(-l / 4), 20 * torch.exp(-l / 8)])
    amp[:2, 0] = 0
    lat = model.lat
    beta = 0.5 + 0.5 * torch.cos(lat) ** 2  # a smooth, known latitude dependence
    return amp, beta


def test_adjoint_passes_the_dot_product_test(model):
    amp, beta = _true_statistics(model)
    B = BalancedCovariance(model.dyn, amp, beta, scale=2.0)
    g = torch.Generator().manual_seed(3)
    v = torch.randn(4, B.n_ctrl, generator=g, dtype=torch.float64)
    x = torch.randn(4, model.state_size, generator=g, dtype=torch.float64)
    lhs = (B.sqrt(v) * x).sum(1)
    rhs = (v * B.sqrt_t(x)).sum(1)
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=0)


def test_wind_increments_follow_psi_and_chi_and_height_is_balanced(model):
    """A pure-psi control gives a non-divergent wind and the geostrophic height beta f psi / g;
    a pure-chi control gives an irrotational wind and no height."""
    amp, beta = _true_statistics(model)
    B = BalancedCovariance(model.dyn, amp, beta)
    g = torch.Generator().manual_seed(4)
    v = torch.randn(1, B.n_ctrl, generator=g, dtype=torch.float64)
    psi_only, chi_only = v.clone(), v.clone()
    psi_only[:, B.per_var:] = 0
    chi_only[:, : B.per_var] = 0
    chi_only[:, 2 * B.per_var:] = 0
    x_psi = B.sqrt(psi_only).reshape(1, 3, model.dyn.nlat, model.dyn.nlon)
    x_chi = B.sqrt(chi_only).reshape(1, 3, model.dyn.nlat, model.dyn.nlon)
    vd_psi = balanced_b._vort_div(model.dyn, x_psi[:, 1:])
    vd_chi = balanced_b._vort_div(model.dyn, x_chi[:, 1:])
    assert vd_psi[:, 1].abs().max() < 1e-9 * vd_psi[:, 0].abs().max()  # no divergence
    assert vd_chi[:, 0].abs().max() < 1e-9 * vd_chi[:, 1].abs().max()  # no vorticity
    assert x_chi[:, 0].abs().max() == 0  # velocity potential carries no height
    inv = -(balanced_b._radius() ** 2) * balanced_b._transforms(model.dyn)["inv_ll"]
    psi = balanced_b._isht(model.dyn, vd_psi[:, 0] * inv)
    expected = beta[:, None] * (model.dyn.coriolis[:, :1].to(torch.float64) / balanced_b.GRAVITY) * psi
    assert torch.allclose(x_psi[:, 0], expected[0], atol=1e-6 * expected.abs().max().item())


def test_fit_recovers_known_statistics(model):
    """Samples drawn from a B with known spectra and balance give them back."""
    amp, beta = _true_statistics(model)
    B = BalancedCovariance(model.dyn, amp, beta)
    g = torch.Generator().manual_seed(5)
    samples = B.sqrt(torch.randn(300, B.n_ctrl, generator=g, dtype=torch.float64))
    got_amp, got_beta = fit(model.dyn, samples.reshape(300, *model.state_shape))
    keep = slice(1, 16)  # resolved wavenumbers with non-negligible variance
    rel = (got_amp[:, keep] / amp[:, keep] - 1).abs()
    assert rel.max() < 0.2, rel.max()
    mid = model.lat.abs().rad2deg().gt(20) & model.lat.abs().rad2deg().lt(70)
    assert torch.allclose(got_beta[mid], beta[mid], atol=0.1)


def test_refuses_a_model_without_spherical_dynamics(tmp_path):
    model = Lorenz96()
    op = build_operator("all", model, torch.Generator().manual_seed(0))
    ctx = Context(model=model, operator=op, climatology=torch.zeros(2, 40), members=1, cache_dir=tmp_path)
    with pytest.raises(UsageError, match="balanced.*'sw'"):
        balanced_b.estimate(model, ctx, lambda *a: None, lambda: None)


def test_estimate_is_cached_per_network_spec_not_per_seed(model, tmp_path, monkeypatch):
    """The held-out run happens once; a network drawn from another seed with the same spec
    reads the same cache, another spec estimates anew."""
    clim = model.climatology(8).to(torch.float64)
    # The model's own dynamics are not under test here: a cheap stand-in truth and forecast.
    monkeypatch.setattr(model, "truth_run", lambda cycles, gen: clim[torch.arange(cycles + 1) % len(clim)])
    monkeypatch.setattr(model, "forecast", lambda x, gen=None: 0.9 * x + 0.1 * clim[:1])
    calls = []
    amp, beta = _true_statistics(model)
    exact = BalancedCovariance(model.dyn, amp, beta)

    def analyse(S, xb, y, operator):  # a cheap stand-in for the 3D-Var analysis
        calls.append(1)
        return xb

    def context(spec, seed):
        op = build_operator(spec, model, torch.Generator().manual_seed(seed))
        return Context(model=model, operator=op, climatology=clim, members=1, cache_dir=tmp_path)

    first = balanced_b.estimate(model, context("random:0.05", 1), analyse, lambda: exact, cycles=3, burn_in=0,
                                build_operator=build_operator)
    n = len(calls)
    assert n == 6
    again = balanced_b.estimate(model, context("random:0.05", 2), analyse, lambda: exact, cycles=3, burn_in=0,
                                build_operator=build_operator)
    assert len(calls) == n
    assert torch.equal(first.amplitude, again.amplitude)
    balanced_b.estimate(model, context("random:0.01", 1), analyse, lambda: exact, cycles=3, burn_in=0,
                        build_operator=build_operator)
    assert len(calls) == 2 * n
    assert math.isfinite(float(first.amplitude.sum()))
