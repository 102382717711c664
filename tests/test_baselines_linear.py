"""Linear-Gaussian acceptance: the baselines against the exact Kalman filter."""

import math

import pytest
import torch

from baselines import kalman
from baselines.enkf import EnKF
from baselines.letkf import LETKF
from baselines.var3d import Var3D
from interfaces.assimilator import Context
from interfaces.covariance import DenseCovariance
from interfaces.observations import ObservationOperator, Observations, build_operator
from interfaces.models.linear import LinearGaussian

F64 = torch.float64


def _setup(spec="every:2", size=10, seed=0, std=0.7):
    model = LinearGaussian(size=size)
    gen = torch.Generator().manual_seed(seed)
    op = build_operator(spec, model, gen, std=std)
    ctx = Context(model=model, operator=op, climatology=model.climatology(500), members=1,
                  generator=torch.Generator().manual_seed(seed + 100))
    return model, op, ctx, gen


def _prior(model, gen):
    """A KF prior: a forecast covariance and a mean drawn from it, with one observation draw."""
    Pf = model.M @ model.P_clim @ model.M.T * 0.3 + model.Q
    mean = torch.linalg.cholesky(Pf) @ torch.randn(model.state_shape[0], generator=gen, dtype=F64)
    return mean, 0.5 * (Pf + Pf.T)


def _observe(op, truth, gen):
    y = op.apply(truth[None])[0] + op.std * torch.randn(op.n_obs, generator=gen, dtype=F64)
    return Observations.from_values(y, op.std)


def _exact_ensemble(mean, cov, N, gen):
    """N members whose sample mean and covariance equal (mean, cov) to round-off."""
    n = mean.shape[0]
    Z = torch.randn(N, n, generator=gen, dtype=F64)
    Z = Z - Z.mean(0)
    evals, V = torch.linalg.eigh(Z.T @ Z / (N - 1))
    Z = Z @ (V * evals.rsqrt()) @ V.T  # whitened: sample covariance exactly I
    return mean + Z @ torch.linalg.cholesky(cov).T


class NoAdjoint(ObservationOperator):
    """A linear operator known only through apply(), so H^T must come from autograd."""

    linear = True

    def __init__(self, inner):
        super().__init__(inner.state_shape, inner.std, inner.locations, inner.channels, "noadjoint")
        self.H = inner.matrix()

    def apply(self, flat):
        return flat @ self.H.T

    def subset(self, mask):  # pragma: no cover - not needed here
        raise NotImplementedError

    def matrix(self):
        return self.H


@pytest.mark.parametrize("spec", ["all", "every:2", "random:0.3"])
@pytest.mark.parametrize("adjoint", [True, False])
def test_3dvar_with_true_B_equals_kalman_mean(spec, adjoint):
    model, op, ctx, gen = _setup(spec)
    if not adjoint:
        op = NoAdjoint(op)
    mean, Pf = _prior(model, gen)
    obs = _observe(op, mean + torch.randn(10, generator=gen, dtype=F64), gen)
    var = Var3D(tol=1e-14)
    var.prepare(ctx)
    var.covariance = DenseCovariance(Pf)
    xa = var.assimilate(mean[None], obs, op)[0]
    kf_mean, _ = kalman.analysis(mean, Pf, op.matrix(), torch.diag(op.std**2), obs.values)
    assert torch.linalg.norm(xa - kf_mean) <= 1e-8 * torch.linalg.norm(kf_mean)
    d = var.diagnostics()
    assert 1 <= d["iterations"] <= 10 + 1 and d["cost"] > 0


def test_3dvar_lbfgs_path_on_linear_H_reaches_the_kalman_mean():
    # The nonlinear solver on a quadratic cost: it must find the same minimum.
    model, op, ctx, gen = _setup("every:2")
    mean, Pf = _prior(model, gen)
    obs = _observe(op, mean, gen)
    var = Var3D(tol=1e-10)
    var.prepare(ctx)
    var.covariance = DenseCovariance(Pf)
    v, iters = var._solve_nonlinear(var.covariance, mean[None], obs.values, 1 / obs.std, op)
    xa = mean + var.covariance.sqrt(v)[0]
    kf_mean, _ = kalman.analysis(mean, Pf, op.matrix(), torch.diag(op.std**2), obs.values)
    assert torch.linalg.norm(xa - kf_mean) <= 1e-6 * torch.linalg.norm(kf_mean)


def test_3dvar_analyses_each_member():
    model, op, ctx, gen = _setup("all")
    mean, Pf = _prior(model, gen)
    obs = _observe(op, mean, gen)
    var = Var3D(tol=1e-14)
    var.prepare(ctx)
    var.covariance = DenseCovariance(Pf)
    ens = mean + torch.randn(3, 10, generator=gen, dtype=F64)
    out = var.assimilate(ens, obs, op)
    for i in range(3):
        one = var.assimilate(ens[i:i + 1], obs, op)[0]
        torch.testing.assert_close(out[i], one, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("spec", ["all", "every:3"])
def test_etkf_with_exact_prior_reproduces_kalman(spec):
    model, op, ctx, gen = _setup(spec)
    mean, Pf = _prior(model, gen)
    obs = _observe(op, mean, gen)
    ens = _exact_ensemble(mean, Pf, 25, gen)
    method = EnKF(variant="etkf", inflation=1.0, rtps=0.0)
    method.prepare(ctx)
    out = method.assimilate(ens, obs, op)
    kf_mean, kf_cov = kalman.analysis(mean, Pf, op.matrix(), torch.diag(op.std**2), obs.values)
    torch.testing.assert_close(out.mean(0), kf_mean, rtol=1e-6, atol=1e-6 * kf_mean.abs().max().item())
    torch.testing.assert_close(torch.cov(out.T), kf_cov, rtol=1e-6, atol=1e-6 * kf_cov.abs().max().item())


def test_letkf_without_localisation_is_the_etkf():
    # A radius far beyond the domain makes every local weight 1: the global ETKF exactly.
    model, op, ctx, gen = _setup("every:2")
    mean, Pf = _prior(model, gen)
    obs = _observe(op, mean, gen)
    ens = _exact_ensemble(mean, Pf, 25, gen)
    letkf, etkf = LETKF(radius=1e6, rtps=0.0), EnKF(inflation=1.0, rtps=0.0)
    letkf.prepare(ctx)
    etkf.prepare(ctx)
    torch.testing.assert_close(letkf.assimilate(ens, obs, op), etkf.assimilate(ens, obs, op), rtol=1e-9, atol=1e-9)


def test_stochastic_enkf_mean_within_sampling_error():
    # With an exact prior ensemble the only error of the mean is K times the mean of the N
    # observation perturbations: Gaussian with covariance K R K^T / N. Every component must lie
    # within 5 of its standard errors (a false alarm about once in 1.7 million per component).
    model, op, ctx, gen = _setup("every:2")
    mean, Pf = _prior(model, gen)
    obs = _observe(op, mean, gen)
    N = 400
    ens = _exact_ensemble(mean, Pf, N, gen)
    method = EnKF(variant="stochastic", inflation=1.0, rtps=0.0, center_perturbations=False)
    method.prepare(ctx)
    out = method.assimilate(ens, obs, op)
    H, R = op.matrix(), torch.diag(op.std**2)
    kf_mean, kf_cov = kalman.analysis(mean, Pf, H, R, obs.values)
    K = torch.linalg.solve(H @ Pf @ H.T + R, H @ Pf).T
    stderr = (torch.diagonal(K @ R @ K.T) / N).sqrt()
    assert torch.all((out.mean(0) - kf_mean).abs() <= 5 * stderr)
    # Its covariance estimates Pa: each variance within 5 standard errors of a sample
    # variance of N Gaussian draws, sqrt(2 / (N - 1)) Pa_ii.
    var_err = torch.diagonal(torch.cov(out.T)) - torch.diagonal(kf_cov)
    assert torch.all(var_err.abs() <= 5 * math.sqrt(2 / (N - 1)) * torch.diagonal(kf_cov))


def test_stochastic_enkf_centred_perturbations_give_the_exact_mean():
    model, op, ctx, gen = _setup("every:2")
    mean, Pf = _prior(model, gen)
    obs = _observe(op, mean, gen)
    ens = _exact_ensemble(mean, Pf, 30, gen)
    method = EnKF(variant="stochastic", inflation=1.0, rtps=0.0)
    method.prepare(ctx)
    kf_mean, _ = kalman.analysis(mean, Pf, op.matrix(), torch.diag(op.std**2), obs.values)
    torch.testing.assert_close(method.assimilate(ens, obs, op).mean(0), kf_mean, rtol=1e-9, atol=1e-9)


def _cycle_vs_kalman(method, members, cycles=200, burn=60, spec="every:2", start_cov=None):
    """Cycle ``method`` and the exact KF on the same truth and observations; return the
    per-cycle KF analysis means and std, the method's means and both RMSEs after burn-in."""
    model, op, ctx, gen = _setup(spec, seed=5)
    ctx.members = members
    method.prepare(ctx)
    noise = torch.Generator().manual_seed(9)
    truth = model.initial_states(1, gen)[0]
    if start_cov is None:  # KF from climatology, ensemble drawn from it
        kf = kalman.KalmanFilter(model.M, model.Q, torch.zeros(10, dtype=F64), model.P_clim.clone())
        ens = model.initial_states(members, gen)
    else:  # both start from the same state; the KF with the given covariance
        kf = kalman.KalmanFilter(model.M, model.Q, truth.clone(), start_cov)
        ens = truth.clone()[None]
    H, R = op.matrix(), torch.diag(op.std**2)
    diffs, err_m, err_kf = [], [], []
    for k in range(cycles):
        truth = model.forecast(truth[None], gen)[0]
        obs = _observe(op, truth, gen)
        kf.forecast()
        kf.update(H, R, obs.values)
        # Ensembles carry the model noise; a one-member method forecasts the mean.
        ens = model.forecast(ens, noise if members > 1 else None)
        ens = method.assimilate(ens, obs, op)
        if k >= burn:
            sd = kf.cov.diagonal().sqrt()
            diffs.append(((ens.mean(0) - kf.mean) / sd).pow(2).mean().item())
            err_m.append((ens.mean(0) - truth).pow(2).mean().item())
            err_kf.append((kf.mean - truth).pow(2).mean().item())
    n = len(diffs)
    return math.sqrt(sum(diffs) / n), math.sqrt(sum(err_m) / n), math.sqrt(sum(err_kf) / n), kf


def test_cycled_3dvar_with_steady_state_B_is_the_steady_kalman_filter():
    # With a fixed network the KF converges to a steady gain; 3D-Var with B equal to the
    # steady forecast covariance has that gain, so started together they stay together.
    model, op, ctx, gen = _setup("every:2", seed=5)
    H, R = op.matrix(), torch.diag(op.std**2)
    kf = kalman.KalmanFilter(model.M, model.Q, torch.zeros(10, dtype=F64), model.P_clim.clone())
    for _ in range(300):
        kf.forecast()
        kf.update(H, R, torch.zeros(op.n_obs, dtype=F64))
    steady_Pf = model.M @ kf.cov @ model.M.T + model.Q

    class Steady(Var3D):
        def prepare(self, context):
            super().prepare(context)
            self.covariance = DenseCovariance(steady_Pf)

    rel, rmse, rmse_kf, _ = _cycle_vs_kalman(Steady(tol=1e-13), members=1, start_cov=kf.cov)
    assert rel < 1e-8
    assert abs(rmse - rmse_kf) < 1e-8 * rmse_kf


def test_cycled_etkf_close_to_kalman_filter():
    # Sampling noise of an N-member mean is about 1/sqrt(N) of the KF's analysis std; allow
    # 3 times that for the gain's sampling error too, and an RMSE within 5 % of the KF's.
    N = 200
    rel, rmse, rmse_kf, _ = _cycle_vs_kalman(EnKF(inflation=1.0, rtps=0.0), members=N)
    assert rel < 3 / math.sqrt(N)
    assert rmse < 1.05 * rmse_kf


def test_cycled_stochastic_enkf_close_to_kalman_filter():
    N = 200
    rel, rmse, rmse_kf, _ = _cycle_vs_kalman(EnKF(variant="stochastic", inflation=1.0, rtps=0.0), members=N)
    assert rel < 3 / math.sqrt(N)
    assert rmse < 1.05 * rmse_kf


# --- static B ----------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from baselines import static_b  # noqa: E402


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 30), st.integers(1, 12), st.floats(0.01, 10.0), st.integers(0, 2**31 - 1))
def test_sample_covariance_is_the_scaled_sample_covariance_and_psd(n, dim, scale, seed):
    samples = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=F64)
    B = static_b.SampleCovariance(samples, scale).dense()
    torch.testing.assert_close(B, scale * torch.cov(samples.T).reshape(dim, dim), rtol=1e-9, atol=1e-12)
    assert torch.linalg.eigvalsh(B).min() >= -1e-10 * max(1.0, B.abs().max().item())


def test_estimate_sources_and_scaling():
    model, op, ctx, gen = _setup("all")
    clim = model.climatology(2000)
    B1 = static_b.estimate(model, clim, "climatology", 1.0).dense()
    torch.testing.assert_close(static_b.estimate(model, clim, "climatology", 0.5).dense(), 0.5 * B1)
    # 2000 samples of a Gaussian climatology: B within sampling error of P_clim.
    assert torch.linalg.norm(B1 - model.P_clim) < 0.1 * torch.linalg.norm(model.P_clim)
    nmc = static_b.estimate(model, clim, "nmc", 1.0, generator=torch.Generator().manual_seed(0)).dense()
    assert torch.linalg.eigvalsh(nmc).min() > -1e-10
    # The forecast pairs carry independent model noise: B is at least about 2 Q.
    assert torch.trace(nmc) > 1.5 * torch.trace(model.Q)


def test_3dvar_on_the_linear_testbed_beats_climatology_and_nears_the_kalman_filter():
    from interfaces.harness import Experiment, run_experiment

    s = {m: run_experiment(Experiment(model="linear", method=m, cycles=300, burn_in=50, seed=0)).summary
         for m in ("climatology", "3dvar", "enkf")}
    assert s["3dvar"]["analysis_rmse"] < 0.6 * s["climatology"]["analysis_rmse"]
    assert s["enkf"]["analysis_rmse"] < s["3dvar"]["analysis_rmse"]
