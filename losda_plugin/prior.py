"""The trained latent prior shared by losda, dps and l3dvar: VAE + conditional denoiser + the
latent background-error statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .denoiser import ConditionalDenoiser, DenoiserNet
from .geometry import Geometry
from .vae import VAE


@dataclass
class LatentPrior:
    geometry: Geometry
    config: dict[str, Any]
    vae: VAE
    denoiser: ConditionalDenoiser
    #: Per-element variance of z_truth - z_b on the training pairs (diagonal latent B).
    b_var: torch.Tensor
    #: What training measured (reconstruction RMSE per variable, losses, seconds...).
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def sigma_data(self) -> float:
        return float(self.denoiser.sigma_data)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z)

    @property
    def device(self) -> torch.device:
        return self.b_var.device

    def to(self, device: torch.device | str) -> "LatentPrior":
        """Move the networks and the latent statistics to ``device`` (in place); returns self."""
        self.vae.to(device)
        self.denoiser.to(device)
        self.b_var = self.b_var.to(device)
        return self

    def eval(self) -> "LatentPrior":
        self.vae.eval()
        self.denoiser.eval()
        for p in (*self.vae.parameters(), *self.denoiser.parameters()):
            p.requires_grad_(False)  # guidance differentiates w.r.t. latents only
        return self


def build_networks(cfg: dict[str, Any], geometry: Geometry, mean: torch.Tensor, std: torch.Tensor, sigma_data: float = 1.0):
    vae = VAE(geometry, cfg["vae_widths"], cfg["latent_channels"], mean, std, decoder=cfg.get("vae_decoder", "plain"))
    latent_geometry = Geometry(geometry.kind, vae.latent_shape[1:], cfg["latent_channels"], True)
    net = DenoiserNet(latent_geometry, cfg["latent_channels"], cfg["denoiser_width"], cfg["denoiser_blocks"])
    return vae, ConditionalDenoiser(net, sigma_data)
