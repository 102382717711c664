"""A convolutional VAE on the model's grid: x (physical units) <-> z (a small latent grid).

The encoder and decoder work on normalised states: the climatological mean field is removed
and each channel is divided by its climatological anomaly std, so height (hundreds of metres)
and winds (m/s) weigh alike. The latent keeps a coarse spatial grid (each level halves every
axis) because the guidance needs a decoder that is local and cheap to differentiate.

The latent used downstream is the encoder mean, divided by a per-channel scale measured on the
training states so that latents are of order one.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .geometry import GeoConv, Geometry, ResBlock


#: Decoder kinds: plain convolutions, or with a linear (residual) path beside them.
DECODERS = ("plain", "residual")


class Encoder(nn.Module):
    def __init__(self, geometry: Geometry, widths: list[int], latent_channels: int):
        super().__init__()
        self.geometry = geometry
        self.inp = GeoConv(geometry, geometry.channels, widths[0])
        self.blocks = nn.ModuleList()
        for i, w in enumerate(widths):
            nxt = widths[i + 1] if i + 1 < len(widths) else w
            self.blocks.append(ResBlock(geometry, w, nxt))
        self.out = GeoConv(geometry, widths[-1], 2 * latent_channels)

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:  # every block but the last is followed by a halving
            h = block(h)
            if block is not self.blocks[-1]:
                h = self.geometry.down(h)
        mean, logvar = self.out(torch.nn.functional.silu(h)).chunk(2, dim=1)
        return mean, logvar.clamp(-12, 6)


class Decoder(nn.Module):
    """Convolutions from the latent grid up to the model's grid. ``residual``: plus a linear path
    (a learned interpolation: doubling then a 3x3 convolution per level, no activation) that
    carries the large scales, so the nonlinear path only learns the correction."""

    def __init__(self, geometry: Geometry, widths: list[int], latent_channels: int, residual: bool = False):
        super().__init__()
        self.geometry = geometry
        self.linear = None
        if residual:
            self.linear = nn.ModuleList([GeoConv(geometry, latent_channels, latent_channels) for _ in widths[1:]])
            self.linear_out = GeoConv(geometry, latent_channels, geometry.channels)
        rev = widths[::-1]
        self.inp = GeoConv(geometry, latent_channels, rev[0])
        self.blocks = nn.ModuleList()
        for i, w in enumerate(rev):
            nxt = rev[i + 1] if i + 1 < len(rev) else w
            self.blocks.append(ResBlock(geometry, w, nxt))
        self.out = GeoConv(geometry, rev[-1], geometry.channels)

    def forward(self, z):
        h = self.inp(z)
        for block in self.blocks:  # every block but the last is followed by a doubling
            h = block(h)
            if block is not self.blocks[-1]:
                h = self.geometry.up(h)
        out = self.out(torch.nn.functional.silu(h))
        if self.linear is not None:
            lin = z
            for conv in self.linear:
                lin = conv(self.geometry.up(lin))
            out = out + self.linear_out(lin)
        return out


class VAE(nn.Module):
    """``levels = len(widths) - 1`` halvings; latent grid ``(latent_channels, *spatial / 2**levels)``."""

    def __init__(self, geometry: Geometry, widths: list[int], latent_channels: int, mean: torch.Tensor, std: torch.Tensor,
                 decoder: str = "plain"):
        super().__init__()
        geometry.check_levels(len(widths) - 1)
        if decoder not in DECODERS:
            raise ValueError(f"unknown VAE decoder '{decoder}'; valid: {', '.join(DECODERS)}")
        self.geometry = geometry
        self.encoder = Encoder(geometry, widths, latent_channels)
        self.decoder = Decoder(geometry, widths, latent_channels, residual=decoder == "residual")
        # Normalisation (network layout: (channels, *spatial)) and latent scale live in buffers so
        # they travel with the checkpoint.
        self.register_buffer("mean", mean.to(torch.float32))
        self.register_buffer("std", std.to(torch.float32))
        self.register_buffer("latent_scale", torch.ones(latent_channels))
        self.latent_shape = geometry.latent_shape(latent_channels, len(widths) - 1)

    def _scale(self):
        return self.latent_scale.view(-1, *([1] * self.geometry.dims))

    def normalise(self, x):
        return (self.geometry.to_net(x.to(torch.float32)) - self.mean) / self.std

    def denormalise(self, xn):
        return self.geometry.from_net(xn * self.std + self.mean)

    def encode_stats(self, x):
        """Mean and log-variance of q(z | x) in unscaled latent units."""
        return self.encoder(self.normalise(x))

    def encode(self, x):
        """The scaled latent (encoder mean) of physical states (batch, *state_shape)."""
        mean, _ = self.encode_stats(x)
        return mean / self._scale()

    def decode(self, z):
        """Physical states (float32) from scaled latents; differentiable."""
        return self.denormalise(self.decoder(z * self._scale()))

    def elbo_terms(self, x, generator=None):
        """Reconstruction MSE (normalised units, per element) and KL (per latent element)."""
        xn = self.normalise(x)
        mean, logvar = self.encoder(xn)
        # Drawn on the (CPU) generator, then moved: the same numbers on every device.
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
        z = mean + (0.5 * logvar).exp() * eps
        rec = (self.decoder(z) - xn).pow(2).mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        return rec, kl
