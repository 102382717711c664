"""LETKF: a local ETKF at every grid point, with Gaspari-Cohn weights on R^-1
(Hunt, Kostelich & Szunyogh 2007).

All grid points are analysed at once: the local N x N matrices
G_j = sum_o rho_jo Ys_o Ys_o^T are one (sparse) matrix product with the per-observation outer
products, and the N x N eigenproblems are one batched ``eigh``. All channels at a grid point
share its transform (the localisation depends only on the point's distance to observations).
"""

from __future__ import annotations

import math

import torch

from interfaces.device import device_of
from interfaces.ensemble import rtps
from interfaces.options import check_range

from .additive import ClimatologicalPerturbations
from .enkf import EnsembleFilter, ensemble_space
from .localization import observation_weights


class LETKF(EnsembleFilter):
    name = "letkf"
    description = "local ETKF with Gaspari-Cohn localisation of R^-1 (distance from the model)"
    defaults = {
        "radius": 0.0,  # localisation length L (0: the model's default_length_scale)
        "inflation": 1.0,  # multiplicative, on the prior anomalies
        "rtps": 0.1,  # relaxation to prior spread; tuned on Lorenz-96 (N = 20)
        "additive": 0.0,  # additive inflation: climatological anomalies times this (0: off)
    }
    preferred_members = 20

    def __init__(self, **options):
        super().__init__(**options)
        owner = f"method '{self.name}'"
        check_range(owner, self.options, "radius", 0.0, meaning=" (0: the model's default length scale)")
        check_range(owner, self.options, "inflation", 0.0, low_open=True, meaning=" (multiplicative)")
        check_range(owner, self.options, "rtps", 0.0, 1.0, meaning=" (0: off, 1: full relaxation)")
        check_range(owner, self.options, "additive", 0.0, meaning=" (a fraction of the climatological anomalies; 0: off)")
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None  # (locations, weights)
        self._perturbations: ClimatologicalPerturbations | None = None  # with additive inflation

    def prepare(self, context):
        super().prepare(context)
        if self.options["additive"] > 0.0:  # drawn from this experiment's climatology
            self._perturbations = ClimatologicalPerturbations(context.climatology)

    def _half_width(self) -> float:
        """GC half-width c for the length L: c = sqrt(10/3) L matches a Gaussian exp(-d^2/2L^2)
        near zero (Gaspari & Cohn 1999), so weights vanish from 2c (about 3.65 L) on."""
        r = self.options["radius"]
        length = float(r) if r > 0 else float(self.context.model.default_length_scale())
        return math.sqrt(10.0 / 3.0) * length

    def _weights(self, operator) -> torch.Tensor:
        """Localisation weights (n_points, n_obs), reused while the locations do not change."""
        loc = operator.locations.cpu()  # the model's distances are CPU tensors
        if self._cache is not None and self._cache[0].shape == loc.shape and torch.equal(self._cache[0], loc):
            return self._cache[1]
        rho = observation_weights(self.context.model, loc, self._half_width()).to(device_of(self.context))
        self._cache = (loc.clone(), rho)
        return rho

    def _analysis(self, background, observations, operator):
        N = background.shape[0]
        o = self.options
        mean, anom, prior_spread, HX, hmean = ensemble_space(background, operator, o["inflation"])
        n_points = self.context.model.n_points
        channels = mean.shape[0] // n_points

        inv_std = 1.0 / observations.std.to(HX.dtype)
        scale = 1.0 / math.sqrt(N - 1)
        Ys = (HX - hmean) * (inv_std * scale)  # (N, p)
        dn = (observations.values - hmean) * inv_std
        rho = self._weights(operator)  # (P, p), dense or sparse
        outer = (Ys.T.unsqueeze(2) * Ys.T.unsqueeze(1)).reshape(-1, N * N)  # (p, N*N)
        G = (rho @ outer).reshape(n_points, N, N)
        b = rho @ (Ys * dn).T  # (P, N): local Ys R^-1 d
        evals, V = torch.linalg.eigh(G)
        evals = evals.clamp_min(0.0)
        inv = 1.0 / (1.0 + evals)
        w = (V @ ((V.transpose(1, 2) @ b.unsqueeze(2)) * inv.unsqueeze(2))).squeeze(2)  # (P, N)
        T = (V * inv.sqrt().unsqueeze(1)) @ V.transpose(1, 2)  # (P, N, N) symmetric
        # x_a[i] = mean + sum_k (T[i, k] + scale * w[k]) anom[k], per grid point.
        W = T + scale * w.unsqueeze(1)
        A = anom.reshape(N, channels, n_points).permute(2, 0, 1)  # (P, N, C)
        post = (W @ A).permute(1, 2, 0).reshape(N, -1)  # (N, n_state)
        new_mean = post.mean(0)
        post_anom = post - new_mean
        if o["rtps"] > 0.0:
            post_anom = rtps(post_anom, prior_spread, o["rtps"])
        if self._perturbations is not None:  # for model error, which neither inflation nor RTPS can supply
            q = self._perturbations.draw(N, o["additive"], self.context.generator)
            post_anom = post_anom + q.to(post_anom.device, post_anom.dtype)
        return (mean + new_mean + post_anom).reshape(background.shape)
