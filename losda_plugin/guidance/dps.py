"""DPS (Chung et al. 2023): at every reverse step, one gradient nudge of the observation misfit
taken through the denoiser *and* the decoder, of size zeta / ||residual||.

Per sample: x0_guided = x0 - zeta * grad_{z_t} ||r(D(z_t))||, with r the whitened residual, i.e.
zeta / ||r|| times the gradient of 1/2 ||r||^2. ``zeta`` is in units of sigma_data.
"""

from __future__ import annotations

import torch


class PosteriorSampling:
    def __init__(self, misfit, sigma_data: float, zeta: float = 0.5):
        self.misfit, self.step_size = misfit, zeta * sigma_data
        self.last_misfit = float("nan")

    def __call__(self, z_t, sigma, step, denoise):
        z = z_t.detach().requires_grad_(True)
        with torch.enable_grad():
            x0 = denoise(z, sigma)
            norm = self.misfit.residual(x0).pow(2).sum(-1).clamp_min(1e-12).sqrt()
            (grad,) = torch.autograd.grad(norm.sum(), z)
        self.last_misfit = float(0.5 * norm.detach().pow(2).mean())
        x0 = x0.detach()
        return x0, x0 - self.step_size * grad
