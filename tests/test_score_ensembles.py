"""Sampler choices and ensemble calibration of the latent score methods (issue 14, items 3-4).

The Gaussian toy: a prior N(m, v) in one dimension has the exact denoiser
E[z | z_t] = (v z_t + sigma^2 m) / (v + sigma^2). Started from z_b + sigma_max * noise with z_b
itself drawn from N(m, v), the start has exactly the marginal N(m, v + sigma_max^2) of the
forward process, so any error in the output is the sampler's. Each sampler is then a linear map
plus Gaussian noise per step, whose output variance ``exact_variance`` computes in closed form.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from interfaces.errors import UsageError
from interfaces.observations import Observations, SparseLinearOperator
from losda_plugin.config import PRESETS
from interfaces.ensemble import relax_to_prior_spread
from losda_plugin.geometry import Geometry
from losda_plugin.methods import DPS, LOSDA
from losda_plugin.prior import LatentPrior, build_networks
from losda_plugin.sampler import Unguided, fresh_share, reverse_sample
from losda_plugin.schedule import karras_sigmas

M, V = 0.7, 0.3 ** 2  # the toy prior's mean and variance
SD = 0.3


def exact_denoiser(z, sigma):
    return (V * z + sigma ** 2 * M) / (V + sigma ** 2)


def toy_samples(sampler, steps, n=100_000, seed=0, **options):
    z_b = M + SD * torch.randn((n, 1), dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    sigmas = karras_sigmas(steps, 0.02 * SD, 5 * SD).double()
    return reverse_sample(exact_denoiser, z_b, sigmas, Unguided(), torch.Generator().manual_seed(seed),
                          sampler=sampler, **options)


def exact_variance(sampler, steps, churn=0.0, temperature=1.0, renoise=1.0):
    """The output variance of ``sampler`` on the toy, step by step (everything is linear)."""
    sigmas = [float(s) for s in karras_sigmas(steps, 0.02 * SD, 5 * SD).double()]
    var = V + temperature * sigmas[0] ** 2
    gamma = min(churn / steps, math.sqrt(2) - 1) if sampler == "edm" else 0.0
    for sigma, nxt in zip(sigmas[:-1], sigmas[1:]):
        if gamma > 0:
            raised = sigma * (1 + gamma)
            var += temperature * (raised ** 2 - sigma ** 2)
            sigma = raised
        a = V / (V + sigma ** 2)  # x0 = a z_t + (1 - a) m
        if nxt == 0:
            return a ** 2 * var
        r = fresh_share(sampler, sigma, nxt, renoise)
        var = (a + nxt * math.sqrt(1 - r) * (1 - a) / sigma) ** 2 * var + nxt ** 2 * r * temperature
    raise AssertionError("sigmas must end with 0")


@pytest.mark.parametrize("sampler, options", [("ddpm", {}), ("edm", {"churn": 4.0}), ("ddim", {}),
                                              ("renoise", {}), ("ddpm", {"temperature": 2.0})])
def test_toy_samples_have_the_variance_the_step_rule_implies(sampler, options):
    z = toy_samples(sampler, 10, **options)
    expected = exact_variance(sampler, 10, **options)
    # Sampling error of the mean: sqrt(var / n); of the variance: var * sqrt(2 / n) (0.45 % here).
    assert abs(float(z.mean()) - M) < 5 * math.sqrt(expected / z.numel())
    assert float(z.var()) == pytest.approx(expected, rel=5 * math.sqrt(2 / z.numel()))


@pytest.mark.parametrize("sampler, options", [("ddpm", {}), ("edm", {"churn": 4.0}), ("ddim", {})])
def test_proper_samplers_reach_the_gaussian_marginal(sampler, options):
    z = toy_samples(sampler, 1000, n=40_000, **options)
    assert abs(float(z.mean()) - M) < 5 * math.sqrt(V / z.numel())
    # Within sampling error (0.7 % at n = 40,000) plus the remaining discretisation error (< 1.5 %).
    assert exact_variance(sampler, 1000, **options) == pytest.approx(V, rel=0.015)
    assert float(z.var()) == pytest.approx(V, rel=0.015 + 5 * math.sqrt(2 / z.numel()))


def test_renoise_sampler_is_under_dispersed_whatever_the_steps():
    # Re-noising the clean estimate from scratch shrinks the sample toward the mean at every
    # level: on the toy its variance stays near half the prior's however many steps it takes.
    for steps in (10, 100, 1000):
        assert exact_variance("renoise", steps) < 0.55 * V
    assert float(toy_samples("renoise", 100, n=20_000).var()) < 0.55 * V


def test_temperature_widens_the_samples():
    assert exact_variance("ddpm", 1000, temperature=2.0) == pytest.approx(2 * V, rel=0.03)


def test_ddim_sampler_is_the_renoise_sampler_at_renoise_zero():
    a = toy_samples("ddim", 10, n=100)
    b = toy_samples("renoise", 10, n=100, renoise=0.0)
    assert torch.equal(a, b)


# --- RTPS ------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_rtps_gives_the_asked_spread_and_keeps_the_mean(alpha):
    gen = torch.Generator().manual_seed(3)
    analysis = 1.0 + 0.2 * torch.randn(10, 3, 8, generator=gen, dtype=torch.float64)
    background = 0.5 * torch.randn(10, 3, 8, generator=gen, dtype=torch.float64)
    relaxed = relax_to_prior_spread(analysis, background, alpha)
    asked = (1 - alpha) * analysis.std(0) + alpha * background.std(0)
    torch.testing.assert_close(relaxed.std(0), asked, rtol=1e-12, atol=0)
    torch.testing.assert_close(relaxed.mean(0), analysis.mean(0), rtol=0, atol=1e-14)


def test_rtps_leaves_a_value_without_spread_alone():
    analysis = torch.ones(4, 5, dtype=torch.float64)
    background = torch.randn(4, 5, dtype=torch.float64)
    assert torch.equal(relax_to_prior_spread(analysis, background, 0.5), analysis)


# --- the methods ---------------------------------------------------------------------------
SHAPE = (3, 8, 16)


@pytest.fixture(scope="module")
def setting():
    """A small sphere prior with random weights (as tests/test_losda_speed_equivalence.py)."""
    torch.manual_seed(99)
    geometry = Geometry("sphere", SHAPE[1:], SHAPE[0], True)
    cfg = dict(PRESETS[("sphere", "quick")])
    cfg.update(vae_widths=[4, 8], latent_channels=2, denoiser_width=8, denoiser_blocks=1, vae_decoder="plain")
    vae, denoiser = build_networks(cfg, geometry, torch.zeros(SHAPE), torch.ones(SHAPE), sigma_data=0.5)
    torch.nn.init.normal_(denoiser.net.out.conv.weight, std=0.1)
    prior = LatentPrior(geometry, cfg, vae, denoiser, 0.1 + torch.rand(vae.latent_shape)).eval()
    n_state = math.prod(SHAPE)
    index = torch.randperm(n_state)[: n_state // 5]
    op = SparseLinearOperator(SHAPE, index, torch.ones(len(index)), torch.full((len(index),), 0.5),
                              torch.zeros(len(index), 2), index // (n_state // SHAPE[0]), "random:0.2")
    background = torch.randn(4, *SHAPE, dtype=torch.float64)
    y = op(background[:1] + 0.7 * torch.randn(1, *SHAPE, dtype=torch.float64))[0]
    return prior, op, background, Observations.from_values(y, op.std)


def analyse(setting, cls, seed=7, **options):
    prior, op, background, obs = setting
    method = cls(**{**cls.defaults, "samples": 2, "steps": 4, **options})
    method.use_prior(copy.deepcopy(prior), torch.Generator().manual_seed(seed))
    return method.assimilate(background, obs, op), background


@pytest.mark.parametrize("cls", [LOSDA, DPS])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "edm"])
def test_samplers_work_with_the_guidance_and_are_reproducible(setting, cls, sampler):
    first, background = analyse(setting, cls, sampler=sampler)
    again, _ = analyse(setting, cls, sampler=sampler)
    default, _ = analyse(setting, cls)
    assert torch.isfinite(first).all()
    assert torch.equal(first, again)  # same generator seed, same analysis
    assert not torch.equal(first, default)  # the option does change the step
    assert not torch.equal(first, background)


def test_ddim_sampler_gives_the_analyses_of_renoise_zero(setting):
    ddim, _ = analyse(setting, LOSDA, sampler="ddim")
    renoise0, _ = analyse(setting, LOSDA, renoise=0.0)
    assert torch.equal(ddim, renoise0)


@pytest.mark.parametrize("cls", [LOSDA, DPS])
def test_full_rtps_gives_the_background_spread(setting, cls):
    analysis, background = analyse(setting, cls, rtps=1.0)
    untouched, _ = analyse(setting, cls)
    torch.testing.assert_close(analysis.std(0), background.std(0), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(analysis.mean(0), untouched.mean(0), rtol=0, atol=1e-12)


def test_default_options_keep_the_old_sampler(setting):
    default, _ = analyse(setting, LOSDA)
    explicit, _ = analyse(setting, LOSDA, sampler="renoise", renoise=1.0, temperature=1.0, rtps=0.0, churn=0.0)
    assert torch.equal(default, explicit)  # churn only acts with sampler=edm


def test_temperature_above_one_widens_the_ensemble(setting):
    cold, _ = analyse(setting, DPS, sampler="ddpm")
    warm, _ = analyse(setting, DPS, sampler="ddpm", temperature=4.0)
    assert float(warm.std(0).mean()) > float(cold.std(0).mean())


@pytest.mark.parametrize("option, value, words", [
    ("sampler", "heun", "must be one of renoise, ddim, ddpm, edm"),
    ("temperature", 0.0, "option 'temperature' of method 'losda' must be > 0"),
    ("rtps", 1.5, "option 'rtps' of method 'losda' must be in [0, 1]"),
    ("churn", -1.0, "option 'churn' of method 'losda' must be >= 0"),
    ("renoise", 2.0, "option 'renoise' of method 'losda' must be in [0, 1]"),
])
def test_bad_sampling_options_are_refused_in_one_line(option, value, words):
    with pytest.raises(UsageError, match=words.replace("[", r"\[").replace("]", r"\]")):
        LOSDA(**{option: value})


# --- tuning an ensemble of a method that prefers one member ------------------------------------
def test_tune_gives_its_one_method_the_asked_members():
    # compare keeps single-member methods single whatever --members says; tune names one method,
    # so --members is for it (before, `tune --method losda --members 10` silently ran 1 member).
    from argparse import Namespace

    from interfaces.registry import get_registry
    from interfaces.tune import Search

    args = Namespace(method="losda", model="lorenz96", obs="every:2", obs_std=None, cycles=20, burn_in=5,
                     members=10, options=[], truth_options=[], model_error=None, runs=None)
    search = Search(args, get_registry(), {"rtps": ["0", "0.5"]}, [100, 101])
    assert search.members == 10
    assert {job["members"] for job in search.jobs(("0.5",))} == {10}
