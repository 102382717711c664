"""The faster analysis path of losda, dps and l3dvar gives the analyses of the straightforward
one it replaced.

The reference below is the analysis code as it stood before the speed work (commit b3fd67b:
losda_plugin/sampler.py, guidance/*.py and LatentMethod.assimilate), frozen here on purpose: one
decoder pass per optimiser evaluation through ``Geometry.pad``, and the observation misfit
recomputed after every optimised reverse step. Both paths run on the same small prior with random
weights (no training: the equivalence is a property of the code, not of what was learned), the
same observations and the same random stream.

Two comparisons. On the same network (the sped-up one, whose padding is SpherePad) the faster path
must give exactly the reference's analyses: every case below is bit-identical, so any change of
algorithm shows. Against the original network (padding through ``Geometry.pad``) the only numeric
difference is SpherePad's backward, which sums the gradients of the copied rows and columns in
another order (forward values identical; a decoder gradient moves by a few units in the last
place). A minimiser amplifies that: l3dvar with the residual decoder stops where its float32 cost
stops decreasing, and that point is determined only to about sqrt(eps * J) in the control
variable, so the reference itself moves by 7.2e-4 of the state's scale when its background is
changed by 1e-7 relative (the larger move of +-1e-7; measured, one thread; 1.8e-5 with two), the same distance that separates
it from the faster path there. That comparison is therefore bounded by 5e-4 of the scale plus twice
the reference's own move under such a last-place change; a change of algorithm moves this analysis
by more than 2.6e-3 of its scale (30 -> 10 L-BFGS iterations) to 5e-2 (b_scale 3 -> 3.3).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from interfaces.observations import Observations, SparseLinearOperator
from losda_plugin.config import PRESETS
from losda_plugin.geometry import GeoConv, Geometry
from losda_plugin.inference import SpherePad, SpherePadding
from losda_plugin.methods import DPS, L3DVar, LOSDA, _active_steps
from losda_plugin.prior import LatentPrior, build_networks
from losda_plugin.schedule import karras_sigmas

SHAPE = (3, 8, 16)  # a small sphere: 3 variables on 8 x 16
FAST = {"samples": 3, "steps": 4}


# --- the reference: the analysis path before the speed work -----------------------------------
def reference_misfit(prior, op, y, std):
    y, std = y.to(torch.float32), std.to(torch.float32)
    return lambda z: 0.5 * ((y - op(prior.decode(z))) / std).pow(2).sum(-1)


def reference_losda_step(misfit, sigma_data, active, iters, prox, z_t, sigma, step, denoise, record):
    with torch.no_grad():
        x0 = denoise(z_t, sigma)
    if step not in active or iters == 0:
        return x0, x0
    r2 = sigma ** 2 * sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)
    weight = prox / r2
    z = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([z], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (misfit(z) + 0.5 * weight * (z - x0).pow(2).flatten(1).sum(1)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        record["misfit"] = float(misfit(z).mean())
    return x0, z.detach()


def reference_dps_step(misfit_residual, step_size, z_t, sigma, step, denoise, record):
    z = z_t.detach().requires_grad_(True)
    with torch.enable_grad():
        x0 = denoise(z, sigma)
        norm = misfit_residual(x0).pow(2).sum(-1).clamp_min(1e-12).sqrt()
        (grad,) = torch.autograd.grad(norm.sum(), z)
    record["misfit"] = float(0.5 * norm.detach().pow(2).mean())
    x0 = x0.detach()
    return x0, x0 - step_size * grad


def reference_reverse_sample(denoise, z_b, sigmas, guidance, generator, renoise):
    noise = lambda: torch.randn(z_b.shape, generator=generator, dtype=z_b.dtype)  # noqa: E731
    z = z_b + float(sigmas[0]) * noise()
    for i in range(len(sigmas) - 1):
        sigma, nxt = float(sigmas[i]), float(sigmas[i + 1])
        x0, x0_guided = guidance(z, sigma, i, denoise)
        if nxt == 0:
            return x0_guided.detach()
        eps = (z - x0) / sigma
        fresh = noise() if renoise > 0 else 0.0
        z = (x0_guided + nxt * (math.sqrt(1 - renoise) * eps + math.sqrt(renoise) * fresh)).detach()
    return z


def reference_l3dvar(misfit, z_b, b_var, iters, b_scale, record):
    sd = (b_var * b_scale).sqrt().to(z_b.dtype)
    v = torch.zeros_like(z_b, requires_grad=True)
    opt = torch.optim.LBFGS([v], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe", tolerance_grad=1e-6)

    def closure():
        opt.zero_grad()
        loss = (0.5 * v.pow(2).flatten(1).sum(1) + misfit(z_b + sd * v)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    z = (z_b + sd * v).detach()
    with torch.no_grad():
        record["misfit"] = float(misfit(z).mean())
    return z


def reference_assimilate(method, prior, background, obs, op, generator):
    """LatentMethod.assimilate + analyse as they were, for any of the three methods."""
    o = method.options
    members = background.shape[0]
    misfit = reference_misfit(prior, op, obs.values, obs.std)
    record = {}
    z_b = prior.encode(background)
    draws = method.draws(members)
    zb = z_b.repeat_interleave(draws, 0)
    if isinstance(method, L3DVar):
        z_a = reference_l3dvar(misfit, zb, prior.b_var, int(o["iters"]), o["b_scale"], record)
    else:
        sd = prior.sigma_data
        if isinstance(method, LOSDA):
            active = _active_steps(o["opt_steps"], int(o["steps"]))
            guidance = lambda z, s, i, d: reference_losda_step(  # noqa: E731
                misfit, sd, active, int(o["iters"]), o["prox"], z, s, i, d, record)
        else:
            y, std = obs.values.to(torch.float32), obs.std.to(torch.float32)
            residual = lambda x: (y - op(prior.decode(x))) / std  # noqa: E731
            guidance = lambda z, s, i, d: reference_dps_step(residual, o["zeta"] * sd, z, s, i, d, record)  # noqa: E731
        sigmas = karras_sigmas(int(o["steps"]), o["sigma_min"] * sd, o["sigma_max"] * sd)
        denoise = lambda z, s: prior.denoiser(z, s, zb)  # noqa: E731
        z_a = reference_reverse_sample(denoise, zb, sigmas, guidance, generator, o["renoise"])
    with torch.no_grad():
        x_a = prior.decode(z_a).to(torch.float64).view(members, draws, *background.shape[1:])
        if o.get("output") == "increment":
            x_a = background.unsqueeze(1) + x_a - prior.decode(z_b).to(torch.float64).unsqueeze(1)
        analysis = x_a.mean(1)
    return analysis.to(background.dtype), record.get("misfit", float("nan"))


# --- the shared setting ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(1234)
    geometry = Geometry("sphere", SHAPE[1:], SHAPE[0], True)
    mean, std = torch.zeros(SHAPE), torch.ones(SHAPE)
    priors = {}
    for decoder in ("plain", "residual"):
        cfg = dict(PRESETS[("sphere", "quick")])
        cfg.update(vae_widths=[4, 8], latent_channels=2, denoiser_width=8, denoiser_blocks=1, vae_decoder=decoder)
        vae, denoiser = build_networks(cfg, geometry, mean, std, sigma_data=0.5)
        # The denoiser's output layer starts at zero (the identity denoiser); random weights there
        # make the prior's clean estimate depend on the noise level and the background.
        torch.nn.init.normal_(denoiser.net.out.conv.weight, std=0.1)
        b_var = 0.1 + torch.rand(vae.latent_shape)
        priors[decoder] = LatentPrior(geometry, cfg, vae, denoiser, b_var).eval()
    n_state = math.prod(SHAPE)
    index = torch.randperm(n_state)[: n_state // 5]
    op = SparseLinearOperator(SHAPE, index, torch.ones(len(index)), torch.full((len(index),), 0.5),
                              torch.zeros(len(index), 2), index // (n_state // SHAPE[0]), "random:0.2")
    background = torch.randn(2, *SHAPE, dtype=torch.float64)
    y = op(background[:1] + 0.7 * torch.randn(1, *SHAPE, dtype=torch.float64))[0]
    return {"priors": priors, "op": op, "background": background, "obs": Observations.from_values(y, op.std)}


CASES = [
    (LOSDA, {}, 1, "plain"),
    (LOSDA, {"output": "increment"}, 1, "plain"),
    (LOSDA, {"opt_steps": "every:2", "prox": 0.0}, 1, "plain"),
    (LOSDA, {"renoise": 0.0}, 2, "plain"),  # two members: one sample each, conditioned on its own background
    (LOSDA, {}, 1, "residual"),  # a decoder with a linear path beside the convolutions
    (DPS, {}, 1, "plain"),
    (DPS, {"zeta": 3.0}, 2, "plain"),
    (L3DVar, {}, 1, "plain"),
    (L3DVar, {"b_scale": 3.0}, 2, "residual"),
]


@pytest.mark.parametrize("cls, options, members, decoder", CASES,
                         ids=[f"{c.name}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'defaults'}-m{m}-{d}"
                              for c, o, m, d in CASES])
def test_the_analysis_path_matches_the_reference(setting, cls, options, members, decoder):
    prior, op, obs = setting["priors"][decoder], setting["op"], setting["obs"]
    background = setting["background"][:members]
    sampling = FAST if cls is not L3DVar else {}
    method = cls(**{**cls.defaults, **sampling, **options})
    fast_prior = copy.deepcopy(prior)  # use_prior speeds up its prior in place; the reference keeps the original
    method.use_prior(fast_prior, torch.Generator().manual_seed(7))
    assert all(isinstance(m.geometry, SpherePadding) for m in fast_prior.vae.modules() if isinstance(m, GeoConv))
    assert not any(isinstance(m.geometry, SpherePadding) for m in prior.vae.modules() if isinstance(m, GeoConv))
    fast = method.assimilate(background, obs, op)
    assert fast.dtype == background.dtype and fast.shape == background.shape
    # The same network through the reference path: the same arithmetic, bit for bit.
    same, same_misfit = reference_assimilate(method, fast_prior, background, obs, op, torch.Generator().manual_seed(7))
    assert torch.equal(fast, same)
    assert method.diagnostics()["misfit"] == same_misfit
    # The original network: only SpherePad's backward summation order differs.
    reference, reference_misfit_value = reference_assimilate(method, prior, background, obs, op,
                                                             torch.Generator().manual_seed(7))
    scale = float(reference.abs().max())
    own_move = max(float((reference_assimilate(method, prior, background * (1 + nudge), obs, op,
                                               torch.Generator().manual_seed(7))[0] - reference).abs().max())
                   for nudge in (1e-7, -1e-7))
    assert float((fast - reference).abs().max()) <= 5e-4 * scale + 2 * own_move
    # The method did move the state: the comparison is not between two copies of the background.
    assert float((reference - background).abs().max()) > 1e-2 * scale
    assert method.diagnostics()["misfit"] == pytest.approx(reference_misfit_value, rel=1e-3)


@pytest.mark.parametrize("height, width, p", [(8, 16, 1), (6, 10, 2), (5, 7, 1), (4, 9, 2)])
def test_sphere_pad_gives_geometry_pads_values_and_gradient(height, width, p):
    geometry = Geometry("sphere", (height, width), 2, True)
    x = torch.randn(3, 2, height, width, dtype=torch.float64, requires_grad=True)
    expected = geometry.pad(x, p)
    padded = SpherePad.apply(x, p)
    assert torch.equal(padded, expected)  # copies of the input: exactly the same values
    weights = torch.randn_like(expected)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), x)
    (grad,) = torch.autograd.grad((padded * weights).sum(), x)
    torch.testing.assert_close(grad, grad_expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: SpherePad.apply(t, p), (x,))
