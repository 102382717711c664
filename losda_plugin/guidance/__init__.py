"""Guidance: how observations steer the latent prior. Each module is a small callable on top of
``losda_plugin.sampler`` (losda, dps) or, for l3dvar, a variational problem in the same latent."""

from __future__ import annotations

import torch


class ObservationMisfit:
    """J_o(z) = 1/2 ||(y - H(D(z))) / sigma_o||^2 per sample, through the decoder D."""

    def __init__(self, decode, operator, values: torch.Tensor, std: torch.Tensor):
        self.decode = decode
        self.operator = operator
        self.y = values.to(torch.float32)
        self.std = std.to(torch.float32)

    def residual(self, z: torch.Tensor) -> torch.Tensor:
        return (self.y - self.operator(self.decode(z))) / self.std

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.residual(z).pow(2).sum(-1)
