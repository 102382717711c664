"""The conditional denoiser: E[z | z_t, z_b] for a noisy latent z_t at level sigma, given the
background latent z_b.

The network sees the preconditioned noisy increment c_in (z_t - z_b) and z_b itself as two
stacks of channels, and the noise level through FiLM; it predicts the clean increment, to which
z_b is added back. Background conditioning is what lets the prior say "the truth is near z_b,
in the directions a one-cycle forecast gets wrong" instead of only "the truth is on the
attractor" (the prototype measured 4.3 without it, 2.4 with it).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .geometry import GeoConv, Geometry, ResBlock
from .schedule import precondition


class NoiseEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(100.0), dim // 2)))
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise):
        angle = c_noise[:, None] * self.freqs[None]
        return self.mlp(torch.cat([angle.sin(), angle.cos()], dim=-1))


class DenoiserNet(nn.Module):
    """Residual conv stack on the latent grid, modulated by the noise level."""

    def __init__(self, geometry: Geometry, latent_channels: int, width: int, blocks: int, emb: int = 64):
        super().__init__()
        self.embed = NoiseEmbedding(emb)
        self.inp = GeoConv(geometry, 2 * latent_channels, width)
        self.blocks = nn.ModuleList([ResBlock(geometry, width, width, emb) for _ in range(blocks)])
        self.out = GeoConv(geometry, width, latent_channels)
        nn.init.zeros_(self.out.conv.weight)  # start as "the increment is c_skip * input"
        nn.init.zeros_(self.out.conv.bias)

    def forward(self, u_in, z_b, c_noise):
        emb = torch.nn.functional.silu(self.embed(c_noise))
        h = self.inp(torch.cat([u_in, z_b], dim=1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(torch.nn.functional.silu(h))


class ConditionalDenoiser(nn.Module):
    """D(z_t, sigma; z_b) with EDM preconditioning on the increment z_t - z_b."""

    def __init__(self, net: DenoiserNet, sigma_data: float):
        super().__init__()
        self.net = net
        self.register_buffer("sigma_data", torch.tensor(float(sigma_data)))

    def forward(self, z_t, sigma, z_b):
        sigma = torch.as_tensor(sigma, dtype=z_t.dtype, device=z_t.device).expand(z_t.shape[0])
        c_skip, c_out, c_in, c_noise = precondition(sigma, float(self.sigma_data))
        view = (-1, *([1] * (z_t.dim() - 1)))
        u_t = z_t - z_b
        u = c_skip.view(view) * u_t + c_out.view(view) * self.net(c_in.view(view) * u_t, z_b, c_noise)
        return z_b + u
