"""Noise levels and preconditioning (Karras et al. 2022, "EDM"), variance-exploding form.

The diffusion runs on the latent *increment* u = z - z_b (analysis latent minus background
latent): its scale ``sigma_data`` is the background's latent error, much smaller than the
latent's own spread, so noise levels are expressed in multiples of it.
"""

from __future__ import annotations

import math

import torch


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """``steps`` decreasing noise levels from sigma_max to sigma_min, then a final 0."""
    ramp = torch.linspace(0, 1, steps)
    inv = sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return torch.cat([inv ** rho, torch.zeros(1)])


def precondition(sigma: torch.Tensor, sigma_data: float):
    """EDM's c_skip, c_out, c_in and c_noise: keep the network's inputs and targets unit-scaled."""
    total = sigma ** 2 + sigma_data ** 2
    c_skip = sigma_data ** 2 / total
    c_out = sigma * sigma_data / total.sqrt()
    c_in = 1 / total.sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def training_sigmas(n: int, sigma_data: float, generator: torch.Generator, p_std: float = 1.2) -> torch.Tensor:
    """Log-normal noise levels centred a little below sigma_data (EDM's P_mean, P_std)."""
    p_mean = math.log(sigma_data) - 0.4
    return (p_mean + p_std * torch.randn(n, generator=generator)).exp()


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM's lambda(sigma): unit effective weight at every noise level."""
    return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
