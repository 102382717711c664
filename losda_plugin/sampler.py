"""One reverse-process sampler shared by every guided method.

Variance-exploding: z_t = z + sigma * noise. At each level the guidance turns the noisy latent
into a clean estimate (the prior's, and a guided one); the sampler then moves to the next level

    z_next = x0_guided + sigma_next * (sqrt(1 - r) * eps_prior + sqrt(r) * fresh)

where eps_prior = (z_t - x0_prior) / sigma is the prior's noise estimate and r the share of the
next level's noise drawn afresh. Using the prior's eps means a guidance that only shifts the
clean estimate (DPS) shifts z_next by the same amount, which is DPS's own update. The samplers
differ in r and in whether noise is added before the step:

- ``renoise`` (the default): r = ``renoise`` at every step (1: re-noise the guided estimate from
  scratch, the original LO-SDA sampler; 0: DDIM).
- ``ddim``: r = 0, deterministic given the start (Song et al. 2021, eta = 0).
- ``ddpm``: the ancestral step, r = 1 - sigma_next^2 / sigma^2: a draw from the Gaussian
  posterior q(z_next | z_t, x0) of the variance-exploding forward process, x0 the (guided) clean
  estimate (Ho et al. 2020 in VE form; DDIM with eta = 1).
- ``edm``: Karras et al. 2022's stochastic sampler (their Algorithm 2) with its first-order
  (Euler) step: raise the level to sigma_hat = sigma (1 + gamma), gamma = min(churn / steps,
  sqrt 2 - 1), by adding noise of variance sigma_hat^2 - sigma^2, then step deterministically
  (r = 0) from sigma_hat. Heun's second-order correction is left out: it would run the guidance
  (an optimisation, for losda) twice per step.

``temperature`` multiplies the variance of every noise draw (the start's, the fresh part and the
churn): above 1 the samples spread more (a tempered posterior), 1 is the sampler as described.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Denoise = Callable[[torch.Tensor, float], torch.Tensor]

#: The reverse-step rules, the first being the default.
SAMPLERS = ("renoise", "ddim", "ddpm", "edm")


class Unguided:
    """The prior alone: samples of p(z | z_b)."""

    def __call__(self, z_t, sigma, step, denoise):
        with torch.no_grad():
            x0 = denoise(z_t, sigma)
        return x0, x0


def fresh_share(sampler: str, sigma: float, nxt: float, renoise: float) -> float:
    """r: the share of the next level's noise variance drawn afresh."""
    if sampler == "renoise":
        return renoise
    if sampler == "ddpm":
        return 1.0 - (nxt / sigma) ** 2
    return 0.0  # ddim, and edm's step after its churn


def reverse_sample(denoise: Denoise, z_b: torch.Tensor, sigmas: torch.Tensor, guidance, generator: torch.Generator,
                   renoise: float = 1.0, sampler: str = "renoise", churn: float = 0.0,
                   temperature: float = 1.0) -> torch.Tensor:
    """Draw one sample per row of ``z_b`` from the (guided) reverse process; ``sigmas`` ends with 0."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler '{sampler}'; valid: {', '.join(SAMPLERS)}")
    scale = math.sqrt(temperature)
    # Drawn on the (CPU) generator, then moved: a CPU and a CUDA run draw the same numbers.
    noise = lambda: torch.randn(z_b.shape, generator=generator, dtype=z_b.dtype).to(z_b.device)  # noqa: E731
    z = z_b + scale * float(sigmas[0]) * noise()
    steps = len(sigmas) - 1
    gamma = min(churn / steps, math.sqrt(2) - 1) if sampler == "edm" else 0.0
    for i in range(steps):
        sigma, nxt = float(sigmas[i]), float(sigmas[i + 1])
        if gamma > 0:
            raised = sigma * (1 + gamma)
            z = z + scale * math.sqrt(raised ** 2 - sigma ** 2) * noise()
            sigma = raised
        x0, x0_guided = guidance(z, sigma, i, denoise)
        if nxt == 0:
            return x0_guided.detach()
        eps = (z - x0) / sigma
        r = fresh_share(sampler, sigma, nxt, renoise)
        fresh = scale * noise() if r > 0 else 0.0
        z = (x0_guided + nxt * (math.sqrt(1 - r) * eps + math.sqrt(r) * fresh)).detach()
    return z
