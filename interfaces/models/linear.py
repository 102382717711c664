"""A linear-Gaussian system x_{k+1} = M x_k + q, q ~ N(0, Q), where the Kalman filter is exact.

M is a damped rotation of a smooth field on a ring (advection with slight decay), so the system
is stable and has a Gaussian climatology with covariance solving P = M P M^T + Q.
"""

from __future__ import annotations

import math

import torch

from .base import RingModel


def _smooth_covariance(n: int, length: float, variance: float) -> torch.Tensor:
    """A homogeneous covariance on the ring, built from a positive Gaussian spectrum so that it
    is positive definite by construction (a Gaussian of the ring distance need not be)."""
    k = torch.fft.fftfreq(n, dtype=torch.float64) * n
    spectrum = torch.exp(-0.5 * (2 * math.pi * k * length / n) ** 2) + 1e-6
    eye = torch.eye(n, dtype=torch.complex128)
    cov = torch.fft.ifft(torch.fft.fft(eye, dim=0) * spectrum[:, None], dim=0).real
    cov = 0.5 * (cov + cov.T)
    return variance * cov / cov.diagonal().mean()


class LinearGaussian(RingModel):
    name = "linear"
    description = "linear-Gaussian advection on a ring with additive noise (Kalman filter is exact)"
    defaults = {"size": 10, "damping": 0.95, "shift": 0.3, "noise_std": 0.3, "noise_length": 2.0}
    variables = ("x",)
    units = ("1",)
    standard_names = ("",)
    default_obs_std = (1.0,)

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        n = int(o["size"])
        self.state_shape = (n,)
        # Advection by a fractional shift through the Fourier domain: an exact, norm-preserving
        # rotation, damped so the system is stable.
        k = torch.fft.fftfreq(n, dtype=torch.float64) * n
        phase = torch.exp(-2j * math.pi * k * o["shift"] / n)
        eye = torch.eye(n, dtype=torch.complex128)
        shifted = torch.fft.ifft(torch.fft.fft(eye, dim=0) * phase[:, None], dim=0).real
        self.M = o["damping"] * shifted
        self.Q = _smooth_covariance(n, o["noise_length"], o["noise_std"] ** 2)
        self._Q_chol = torch.linalg.cholesky(self.Q)
        self.P_clim = self._stationary_covariance()

    def _stationary_covariance(self) -> torch.Tensor:
        P = self.Q.clone()
        for _ in range(2000):
            P_next = self.M @ P @ self.M.T + self.Q
            if torch.allclose(P_next, P, rtol=1e-13, atol=1e-15):
                break
            P = P_next
        return 0.5 * (P + P.T)

    def forecast(self, ensemble, generator=None):
        x = ensemble @ self.M.T
        if generator is not None:
            noise = torch.randn(x.shape, generator=generator, dtype=torch.float64) @ self._Q_chol.T
            x = x + noise
        return x

    def initial_states(self, n, generator):
        L = torch.linalg.cholesky(self.P_clim)
        return torch.randn(n, self.state_shape[0], generator=generator, dtype=torch.float64) @ L.T

    def climatology(self, n):
        gen = torch.Generator().manual_seed(20251)
        return self.initial_states(n, gen)

    def default_length_scale(self):
        return 2.0
