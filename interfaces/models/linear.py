"""A linear-Gaussian system x_{k+1} = M x_k + q, q ~ N(0, Q), where the Kalman filter is exact.

M is a damped rotation of a smooth field on a ring (advection with slight decay), so the system
is stable and has a Gaussian climatology with covariance solving P = M P M^T + Q.

What the testbed means (the setting of the Kalman filter, ``baselines/kalman.py``):
- the truth is the stochastic system: each step adds model noise q ~ N(0, Q) (``truth_run``
  passes its generator to ``forecast``);
- a forecast propagates a distribution, not a realisation. The harness forecasts a one-member
  run (a deterministic method: 3D-Var, the free run) without a generator, so it propagates the
  *mean*, M x, as the Kalman filter's mean forecast does; a noise draw there would only add
  error that no method could remove, and 3D-Var would no longer be comparable with the KF;
- an ensemble's members (two or more) each get an independent draw of q, as the stochastic
  EnKF theory requires, so that the ensemble covariance forecasts M P M^T + Q.
So ``run --model linear --method 3dvar`` with B the steady Kalman forecast covariance is the
steady Kalman filter (tests/test_linear_testbed.py), and an N-member EnKF approaches the Kalman
filter as N grows.
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
    description = "linear-Gaussian advection on a ring, noise in the truth and ensembles (Kalman filter is exact)"
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
        """M x for every member, plus a draw of the model noise per member when a ``generator``
        is given (the truth, ensemble members); without one, the mean forecast."""
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
