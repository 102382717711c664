"""Additive inflation (baselines/additive.py) and the LETKF's `additive` option: the mean is kept,
the perturbations have the climatological covariance times size^2 (N-1)/N, and 0 draws nothing."""

import pytest
import torch

from baselines.additive import ClimatologicalPerturbations
from baselines.letkf import LETKF
from interfaces.assimilator import Context
from interfaces.errors import UsageError
from interfaces.models.lorenz96 import Lorenz96
from interfaces.observations import Observations, build_operator


def _climatology(n=400, d=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return torch.randn(n, d, generator=gen, dtype=torch.float64) @ A.T + 3.0, A @ A.T


def test_perturbations_have_zero_mean_and_the_scaled_climatological_covariance():
    clim, _ = _climatology()
    sample_cov = torch.cov(clim.T)  # of the states drawn from (not the generating matrix)
    draws = ClimatologicalPerturbations(clim)
    gen = torch.Generator().manual_seed(1)
    members, size, repeats = 5, 0.3, 4000
    acc = torch.zeros_like(sample_cov)
    for _ in range(repeats):
        q = draws.draw(members, size, gen)
        assert q.mean(0).abs().max() < 1e-12
        acc += q.T @ q / members
    expected = size**2 * (members - 1) / members * sample_cov * (len(clim) - 1) / len(clim)
    # 20,000 draws: the diagonal within a few per cent.
    assert torch.allclose(acc.diagonal() / repeats, expected.diagonal(), rtol=0.06)


def _letkf_analysis(additive, seed=3):
    model = Lorenz96(size=40)
    gen = torch.Generator().manual_seed(seed)
    clim = model.climatology(200).to(torch.float64)
    op = build_operator("every:2", model, torch.Generator().manual_seed(0))
    truth = clim[0]
    background = truth + torch.randn(20, 40, generator=gen, dtype=torch.float64)
    y = Observations.from_values(op.apply(truth.unsqueeze(0))[0] + torch.randn(op.n_obs, generator=gen, dtype=torch.float64), op.std)
    method = LETKF(additive=additive)
    method_gen = torch.Generator().manual_seed(11)
    method.prepare(Context(model=model, operator=op, climatology=clim, members=20, generator=method_gen))
    return method.assimilate(background, y, op), method_gen


def test_letkf_additive_keeps_the_mean_and_adds_spread():
    plain, gen_plain = _letkf_analysis(0.0)
    perturbed, _ = _letkf_analysis(0.2)
    assert torch.allclose(perturbed.mean(0), plain.mean(0), atol=1e-10)
    assert perturbed.std(0).mean() > 1.05 * plain.std(0).mean()
    # Off by default, and then no draw is made: the method's random stream is untouched.
    assert torch.equal(gen_plain.get_state(), torch.Generator().manual_seed(11).get_state())


def test_negative_additive_refused_in_one_line():
    with pytest.raises(UsageError) as err:
        LETKF(additive=-0.1)
    assert "additive" in str(err.value) and "\n" not in str(err.value)


def test_letkf_with_additive_inflation_honours_the_contract():
    from interfaces.testing import check_assimilator

    report = check_assimilator(LETKF, members=10, options={"additive": 0.1})
    assert "determinism" in report["checks"]
