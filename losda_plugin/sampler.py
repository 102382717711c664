"""One reverse-process sampler shared by every guided method.

Variance-exploding: z_t = z + sigma * noise. At each level the guidance turns the noisy latent
into a clean estimate (the prior's, and a guided one); the sampler then moves to the next level

    z_next = x0_guided + sigma_next * (sqrt(1 - renoise) * eps_prior + sqrt(renoise) * fresh)

where eps_prior = (z_t - x0_prior) / sigma is the prior's noise estimate. renoise = 0 is DDIM
(deterministic given the start), renoise = 1 re-noises the guided estimate from scratch. Using
the prior's eps means a guidance that only shifts the clean estimate (DPS) shifts z_next by the
same amount, which is DPS's own update.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Denoise = Callable[[torch.Tensor, float], torch.Tensor]


class Unguided:
    """The prior alone: samples of p(z | z_b)."""

    def __call__(self, z_t, sigma, step, denoise):
        with torch.no_grad():
            x0 = denoise(z_t, sigma)
        return x0, x0


def reverse_sample(denoise: Denoise, z_b: torch.Tensor, sigmas: torch.Tensor, guidance, generator: torch.Generator,
                   renoise: float = 1.0) -> torch.Tensor:
    """Draw one sample per row of ``z_b`` from the (guided) reverse process; ``sigmas`` ends with 0."""
    # Drawn on the (CPU) generator, then moved: a CPU and a CUDA run draw the same numbers.
    noise = lambda: torch.randn(z_b.shape, generator=generator, dtype=z_b.dtype).to(z_b.device)  # noqa: E731
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
