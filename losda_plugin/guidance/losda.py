"""LO-SDA: latent optimisation of the clean estimate at chosen reverse steps.

At a step where it is active, starting from the prior's clean estimate x0 = D(z_t, sigma), it
takes K optimiser steps on

    J(z) = 1/2 ||(y - H(Dec(z))) / sigma_o||^2 + prox / (2 r^2) ||z - x0||^2,

and hands the optimised z back to the sampler, which re-noises it to the next level. r^2 is the
variance of the clean latent given z_t under a Gaussian prior of scale sigma_data,
sigma^2 sigma_data^2 / (sigma^2 + sigma_data^2): the proximal term then makes each step the
Gaussian posterior mode given z_t, strong where the prior is sure (low noise) and weak where it
is not. ``prox`` multiplies that weight (0 switches it off, leaving K and lr as the only brake).
"""

from __future__ import annotations

import torch


class LatentOptimisation:
    def __init__(self, misfit, sigma_data: float, active: set[int], iters: int = 5, lr: float = 0.1,
                 prox: float = 1.0, optimizer: str = "adam"):
        self.misfit, self.sigma_data, self.active = misfit, sigma_data, active
        self.iters, self.lr, self.prox, self.optimizer = iters, lr, prox, optimizer
        self._optimised: torch.Tensor | None = None  # z after the latest active step
        self._misfit: float | None = None

    @property
    def last_misfit(self) -> float:
        """Mean observation misfit after the latest active step (nan before any). Computed when
        asked, not after every step: only the last step's is reported, and each costs a decoder pass."""
        if self._optimised is None:
            return float("nan")
        if self._misfit is None:
            with torch.no_grad():
                self._misfit = float(self.misfit(self._optimised).mean())
        return self._misfit

    def __call__(self, z_t, sigma, step, denoise):
        with torch.no_grad():
            x0 = denoise(z_t, sigma)
        if step not in self.active or self.iters == 0:
            return x0, x0
        r2 = sigma ** 2 * self.sigma_data ** 2 / (sigma ** 2 + self.sigma_data ** 2)
        weight = self.prox / r2
        z = x0.clone().requires_grad_(True)

        def cost():
            return (self.misfit(z) + 0.5 * weight * (z - x0).pow(2).flatten(1).sum(1)).sum()

        if self.optimizer == "lbfgs":
            opt = torch.optim.LBFGS([z], lr=1.0, max_iter=self.iters, line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                loss = cost()
                loss.backward()
                return loss

            opt.step(closure)
        else:
            # Adam's step is about lr per coordinate: lr is in units of the latent increment scale.
            opt = torch.optim.Adam([z], lr=self.lr * self.sigma_data)
            for _ in range(self.iters):
                opt.zero_grad()
                cost().backward()
                opt.step()
        self._optimised, self._misfit = z.detach(), None
        return x0, self._optimised
