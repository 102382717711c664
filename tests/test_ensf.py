"""EnSF (baselines/ensf.py): the Assimilator contract, option checks, consistency with the
Kalman analysis on a linear-Gaussian problem, and a cycled Lorenz-96 run with arctan
observations."""

import pytest
import torch

from baselines.ensf import EnSF
from interfaces.assimilator import Context
from interfaces.errors import UsageError
from interfaces.harness import Experiment, run_experiment
from interfaces.models.lorenz96 import Lorenz96
from interfaces.observations import ArctanOperator, Observations, SparseLinearOperator
from interfaces.registry import get_registry
from interfaces.testing import check_assimilator


def test_contract_with_arctan_observations():
    report = check_assimilator(EnSF, obs="arctan+all", members=20)
    assert "determinism" in report["checks"] and "QC-flagged observations unused" in report["checks"]


def test_registered():
    assert get_registry().assimilator("ensf").plugin == "baselines"


@pytest.mark.parametrize("key", ["steps", "eps_alpha", "likelihood_weight", "batch", "inflation", "rtps"])
def test_negative_options_refused_in_one_line(key):
    with pytest.raises(UsageError) as err:
        EnSF(**{key: -1})
    assert key in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("options", [{"prior": "kde"}, {"scale": "unit"}, {"eps_alpha": 1.5}, {"steps": 0}])
def test_invalid_choices_refused(options):
    with pytest.raises(UsageError, match=next(iter(options))):
        EnSF(**options)


def _linear_gaussian():
    """A 4-variable Gaussian prior, three of the variables observed with error std 0.7."""
    gen = torch.Generator().manual_seed(1)
    d = 4
    mu = torch.tensor([1.0, -0.5, 0.3, 2.0], dtype=torch.float64)
    A = torch.randn(d, d, generator=gen, dtype=torch.float64) * 0.5
    P = A @ A.T + 0.5 * torch.eye(d, dtype=torch.float64)
    op = SparseLinearOperator((d,), torch.tensor([0, 2, 3]), torch.ones(3), torch.full((3,), 0.7),
                              torch.zeros(3, 1), torch.zeros(3, dtype=torch.long), "indices")
    y = torch.tensor([2.5, -1.0, 1.0], dtype=torch.float64)
    H, R = op.matrix(), torch.diag(op.std**2)
    kalman = mu + P @ H.T @ torch.linalg.solve(H @ P @ H.T + R, y - H @ mu)
    return mu, P, op, y, kalman, gen


def _ensf_mean(members, steps, mu, P, op, y, gen):
    ensemble = mu + torch.randn(members, len(mu), generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(P).T
    method = EnSF(prior="mixture", scale="spread", steps=steps)
    climatology = 2.0 * torch.randn(1000, len(mu), generator=gen, dtype=torch.float64)
    method.prepare(Context(model=Lorenz96(size=len(mu)), operator=op, climatology=climatology, members=members,
                           generator=torch.Generator().manual_seed(0)))
    return method.assimilate(ensemble, Observations.from_values(y, op.std), op).mean(0)


def test_mixture_analysis_mean_approaches_kalman_as_members_and_steps_grow():
    mu, P, op, y, kalman, gen = _linear_gaussian()
    prior_distance = float((mu - kalman).norm())  # about 1.6
    small = float((_ensf_mean(50, 50, mu, P, op, y, gen) - kalman).norm())
    large = float((_ensf_mean(400, 200, mu, P, op, y, gen) - kalman).norm())
    # Measured: 0.50 and 0.15. The damped likelihood is a heuristic, so the limit is close to,
    # not exactly, the Kalman mean; without the likelihood the error would be the full 1.6.
    assert large < small
    assert large < 0.2 * prior_distance


def test_lorenz96_arctan_cycled_run_beats_the_free_run():
    def run(method):
        exp = Experiment(model="lorenz96", method=method, obs="arctan+all", members=20, cycles=50, burn_in=20, seed=3)
        return run_experiment(exp).summary

    free, ensf = run("free"), run("ensf")
    assert free["analysis_rmse"] > 3.0
    assert ensf["analysis_rmse"] < 0.5  # measured 0.11 over 150 cycles
    assert ensf["diag_steps"] >= 100


def test_closed_form_likelihood_score_matches_autograd():
    """The linear operator's closed form scale * H^T R^-1 (y - H x) is the gradient autograd
    takes through the operator (which nonlinear operators still use)."""
    gen = torch.Generator().manual_seed(5)
    n, members = 12, 5
    # Interpolating operator: each observation a weighted sum of two state values.
    index = torch.randint(0, n, (7, 2), generator=gen)
    weight = torch.rand(7, 2, generator=gen, dtype=torch.float64)
    op = SparseLinearOperator((n,), index, weight, 0.3 + torch.rand(7, generator=gen, dtype=torch.float64),
                              torch.zeros(7, 1), torch.zeros(7, dtype=torch.long), "interp")
    obs = Observations.from_values(torch.randn(7, generator=gen, dtype=torch.float64), op.std)
    method = EnSF()
    method.scale = 0.5 + torch.rand(n, generator=gen, dtype=torch.float64)
    z = torch.randn(members, n, generator=gen, dtype=torch.float64)
    mean = torch.randn(n, generator=gen, dtype=torch.float64)

    class Opaque:  # the same operator, hidden from the closed form
        linear = False
        apply = staticmethod(op.apply)

    closed = method._likelihood_score(z, mean, obs, op)
    traced = method._likelihood_score(z, mean, obs, Opaque())
    assert closed.shape == (members, n)
    assert torch.allclose(closed, traced, rtol=1e-12, atol=1e-12)
    assert closed.abs().max() > 0.1  # not a vacuous comparison of zeros


class _WholeState(SparseLinearOperator):
    """The same operator under another type: EnSF then takes the whole-state path."""


class _WholeStateArctan(ArctanOperator):
    """Likewise for arctan observations."""


@pytest.mark.parametrize("kind", ["selection", "interpolation", "arctan"])
@pytest.mark.parametrize("options", [{}, {"prior": "mixture", "batch": 5, "rtps": 0.5}])
def test_support_path_is_bit_identical_to_the_whole_state_path(kind, options):
    """The analysis works on the observed values only (baselines/ensf.py, _on_support); it must
    give the very bits of the whole-state arithmetic, or archived runs would no longer reproduce."""
    gen = torch.Generator().manual_seed(11)
    n, members, n_obs = 40, 12, 9
    k = 2 if kind == "interpolation" else 1
    # Interpolation shares state values between observations (index_add sums them in order).
    index = torch.randint(0, n, (n_obs, k), generator=gen) if k > 1 else torch.randperm(n, generator=gen)[:n_obs]
    weight = torch.rand(n_obs, k, generator=gen, dtype=torch.float64) if k > 1 else torch.ones(n_obs)
    args = ((n,), index, weight, 0.2 + torch.rand(n_obs, generator=gen, dtype=torch.float64),
            torch.zeros(n_obs, 1), torch.zeros(n_obs, dtype=torch.long), kind)
    fast, whole = SparseLinearOperator(*args), _WholeState(*args)
    if kind == "arctan":
        centre, spread = torch.zeros(n_obs, dtype=torch.float64), torch.full((n_obs,), 2.0, dtype=torch.float64)
        fast = ArctanOperator(fast, centre, spread, torch.full((n_obs,), 0.05, dtype=torch.float64), kind)
        whole = _WholeStateArctan(whole, centre, spread, fast.std, kind)
    background = 3.0 + 2.0 * torch.randn(members, n, generator=gen, dtype=torch.float64)
    y = fast.apply(torch.randn(1, n, generator=gen, dtype=torch.float64) * 2.0)[0]
    climatology = 2.0 * torch.randn(500, n, generator=gen, dtype=torch.float64)

    def analyse(op):
        method = EnSF(steps=60, likelihood_weight=2.0, **options)
        method.prepare(Context(model=Lorenz96(size=n), operator=op, climatology=climatology, members=members,
                               generator=torch.Generator().manual_seed(3)))
        return method.assimilate(background.clone(), Observations.from_values(y, op.std), op)

    fast_analysis, whole_analysis = analyse(fast), analyse(whole)
    assert torch.equal(fast_analysis, whole_analysis)
    assert not torch.allclose(fast_analysis.mean(0), background.mean(0), atol=1e-3)  # the observations moved it
