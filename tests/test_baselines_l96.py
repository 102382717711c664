"""Lorenz-96 through the harness: short runs with looser thresholds than the 1000-cycle
benchmark (benchmarks/l96_baselines.py), plus the LETKF's batching and the plugin wiring."""


import pytest
import torch

from baselines.enkf import EnKF
from baselines.letkf import LETKF
from baselines import localization
from interfaces.assimilator import Context
from interfaces.harness import Experiment, run_experiment
from interfaces.models.lorenz96 import Lorenz96
from interfaces.observations import Observations, build_operator
from interfaces.registry import get_registry


def run(method, obs="all", cycles=300, burn_in=100, seed=0, **options):
    exp = Experiment(model="lorenz96", method=method, obs=obs, cycles=cycles, burn_in=burn_in,
                     seed=seed, method_options=options)
    return run_experiment(exp).summary


FREE = 4.9  # free-run RMSE of these short runs (climatological error, about 5)


def test_registered_with_preferred_sizes():
    reg = get_registry()
    for name, members in (("3dvar", 1), ("enkf", 40), ("letkf", 20)):
        assert reg.assimilator(name).plugin == "baselines"
        assert reg.assimilator(name).factory.preferred_members == members


@pytest.mark.parametrize("method, options, limit", [
    ("enkf", {}, 0.22),
    ("enkf", {"variant": "stochastic"}, 0.28),
    ("letkf", {}, 0.23),
    ("3dvar", {}, 0.47),
])
def test_all_observed(method, options, limit):
    s = run(method, **options)
    assert s["analysis_rmse"] < limit
    assert s["analysis_rmse"] < s["background_rmse"]


@pytest.mark.parametrize("method, limit", [("enkf", 0.45), ("letkf", 0.5), ("3dvar", 2.5)])
def test_half_observed(method, limit):
    assert run(method, obs="every:2")["analysis_rmse"] < limit


@pytest.mark.parametrize("method, limit", [("enkf", 0.1), ("letkf", 0.1)])
def test_arctan_observations(method, limit):
    assert run(method, obs="arctan+all")["analysis_rmse"] < limit


def test_3dvar_nonlinear_uses_lbfgs_and_records_diagnostics():
    s = run("3dvar", obs="arctan+all", cycles=80, burn_in=40)
    assert s["analysis_rmse"] < 0.5  # free: about 5
    assert s["diag_iterations"] >= 2 and s["diag_cost"] > 0


def test_3dvar_linear_records_cg_diagnostics():
    s = run("3dvar", cycles=40, burn_in=10, b_source="climatology")
    assert 1 <= s["diag_iterations"] <= 40 and s["diag_cost"] > 0


def test_stochastic_enkf_is_reproducible_and_seed_dependent():
    a = run("enkf", cycles=30, burn_in=5, variant="stochastic", seed=0)
    b = run("enkf", cycles=30, burn_in=5, variant="stochastic", seed=0)
    c = run("enkf", cycles=30, burn_in=5, variant="stochastic", seed=1)
    # The same seed: bit-for-bit the same scores; another seed: a different experiment.
    assert a["analysis_rmse"] == b["analysis_rmse"] and a["background_rmse"] == b["background_rmse"]
    assert a["analysis_rmse"] != c["analysis_rmse"]
    assert a["background_rmse"] != c["background_rmse"]


def test_rtps_full_restores_the_prior_spread():
    # alpha = 1 gives each state value its prior (uninflated) spread back exactly.
    model = Lorenz96()
    gen = torch.Generator().manual_seed(0)
    op = build_operator("every:2", model, gen)
    ens = model.initial_states(10, gen)
    obs = Observations.from_values(op.apply(ens[:1])[0], op.std)
    full = EnKF(inflation=1.1, rtps=1.0).assimilate(ens, obs, op)
    torch.testing.assert_close(full.std(0), ens.std(0))
    assert not torch.allclose(full.mean(0), ens.mean(0))


class TwoChannelRing:
    """A minimal two-variable model on a ring of 16 points, to test per-point batching."""

    n_points = 16
    state_shape = (2, 16)

    def point_coords(self):
        return torch.arange(16, dtype=torch.float64).unsqueeze(1)

    def distance(self, a, b):
        d = (a[:, :1] - b[:, :1].T).abs()
        return torch.minimum(d, 16 - d)

    def default_length_scale(self):
        return 2.0


def _two_channel_problem(seed=0, n_obs=12):
    gen = torch.Generator().manual_seed(seed)
    from interfaces.observations import SparseLinearOperator

    index = torch.randperm(32, generator=gen)[:n_obs]
    op = SparseLinearOperator((2, 16), index, torch.ones(n_obs), torch.full((n_obs,), 0.5),
                              (index % 16).double().unsqueeze(1), index // 16)
    ens = torch.randn(8, 2, 16, generator=gen, dtype=torch.float64)
    obs = Observations.from_values(torch.randn(n_obs, generator=gen, dtype=torch.float64), op.std)
    ctx = Context(model=TwoChannelRing(), operator=op, climatology=ens, members=8)
    return op, ens, obs, ctx


def test_letkf_equals_etkf_without_localisation_on_a_multichannel_state():
    op, ens, obs, ctx = _two_channel_problem()
    letkf, etkf = LETKF(radius=1e6, rtps=0.0), EnKF(inflation=1.0, rtps=0.0)
    letkf.prepare(ctx)
    etkf.prepare(ctx)
    torch.testing.assert_close(letkf.assimilate(ens, obs, op), etkf.assimilate(ens, obs, op), rtol=1e-9, atol=1e-9)


def test_letkf_sparse_weights_give_the_dense_analysis(monkeypatch):
    op, ens, obs, ctx = _two_channel_problem(seed=1)
    dense = LETKF(radius=1.5)
    dense.prepare(ctx)
    expected = dense.assimilate(ens, obs, op)
    real = localization.observation_weights
    monkeypatch.setattr("baselines.letkf.observation_weights",
                        lambda *a, **k: real(*a, **{**k, "sparse_above": 0, "chunk": 5}))
    sparse = LETKF(radius=1.5)
    sparse.prepare(ctx)
    torch.testing.assert_close(sparse.assimilate(ens, obs, op), expected, rtol=1e-10, atol=1e-12)


def test_letkf_leaves_points_without_nearby_observations_alone():
    op, ens, obs, ctx = _two_channel_problem(seed=2, n_obs=1)
    letkf = LETKF(radius=1.0, rtps=0.0)  # weights vanish beyond 2 * 1.83 = 3.7 points
    letkf.prepare(ctx)
    out = letkf.assimilate(ens, obs, op)
    site = int(op.locations[0, 0])
    far = [p for p in range(16) if min(abs(p - site), 16 - abs(p - site)) > 4]
    torch.testing.assert_close(out[:, :, far], ens[:, :, far], rtol=0, atol=1e-12)
    assert not torch.allclose(out[:, :, site], ens[:, :, site])
