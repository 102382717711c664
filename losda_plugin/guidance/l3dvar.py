"""Latent 3D-Var: the 3D-Var cost with the VAE's latent as control variable,

    J(z) = 1/2 (z - z_b)^T B_z^{-1} (z - z_b) + 1/2 ||(y - H(Dec(z))) / sigma_o||^2,

with a diagonal B_z from latent one-cycle forecast errors (training pairs). Minimised by L-BFGS
in the preconditioned variable v = B_z^{-1/2} (z - z_b). It returns the mode, not a sample.
"""

from __future__ import annotations

import torch


def latent_3dvar(misfit, z_b: torch.Tensor, b_var: torch.Tensor, iters: int = 30, b_scale: float = 1.0):
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
        final = float(misfit(z).mean())
    return z, final
