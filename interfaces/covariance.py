"""The background-error covariance contract used by variational methods.

A model may supply its own static B (e.g. spherical-harmonic correlations on the sphere) by
overriding ``Model.static_covariance``; otherwise methods build a dense one from anomalies.
"""

from __future__ import annotations

import abc

import torch


class BackgroundCovariance(abc.ABC):
    """B = S S^T given through its square root S: control vector v (batch, n_ctrl) -> (batch, n_state)."""

    n_ctrl: int

    @abc.abstractmethod
    def sqrt(self, v: torch.Tensor) -> torch.Tensor:
        """Apply S to control vectors (batch, n_ctrl), giving state increments (batch, n_state)."""

    def sqrt_t(self, x: torch.Tensor) -> torch.Tensor:
        """Apply S^T (batch, n_state) -> (batch, n_ctrl); default through autograd."""
        v = torch.zeros(x.shape[0], self.n_ctrl, dtype=x.dtype, device=x.device, requires_grad=True)
        (out,) = torch.autograd.grad(self.sqrt(v), v, grad_outputs=x)
        return out

    def dense(self) -> torch.Tensor:
        """The full matrix (for tests and small systems)."""
        S = self.sqrt(torch.eye(self.n_ctrl, dtype=torch.float64)).T  # (n_state, n_ctrl)
        return S @ S.T


class DenseCovariance(BackgroundCovariance):
    """B given as a matrix; S from its symmetric eigen-decomposition (robust to rank deficiency)."""

    def __init__(self, B: torch.Tensor):
        B = 0.5 * (B + B.T)
        evals, evecs = torch.linalg.eigh(B.to(torch.float64))
        self.matrix = B
        self.S = evecs * evals.clamp_min(0).sqrt()
        self.n_ctrl = self.S.shape[1]

    def sqrt(self, v):
        return v @ self.S.T.to(v.dtype)

    def sqrt_t(self, x):
        return x @ self.S.to(x.dtype)

    def dense(self):
        return self.matrix
