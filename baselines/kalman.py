"""The reference Kalman filter for the linear-Gaussian testbed: exact, small and readable.

Everything is a plain matrix formula in float64; the baselines are tested against it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def analysis(mean: torch.Tensor, cov: torch.Tensor, H: torch.Tensor, R: torch.Tensor,
             y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Kalman update of N(mean, cov) by y = H x + e, e ~ N(0, R)."""
    innovation_cov = H @ cov @ H.T + R
    gain = torch.linalg.solve(innovation_cov, H @ cov).T  # P H^T S^-1, S symmetric
    mean_a = mean + gain @ (y - H @ mean)
    # Joseph form: stays symmetric positive semidefinite for any gain.
    I_KH = torch.eye(cov.shape[0], dtype=cov.dtype) - gain @ H
    cov_a = I_KH @ cov @ I_KH.T + gain @ R @ gain.T
    return mean_a, 0.5 * (cov_a + cov_a.T)


def forecast(mean: torch.Tensor, cov: torch.Tensor, M: torch.Tensor,
             Q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Propagate N(mean, cov) through x' = M x + q, q ~ N(0, Q)."""
    cov_f = M @ cov @ M.T + Q
    return M @ mean, 0.5 * (cov_f + cov_f.T)


@dataclass
class KalmanFilter:
    """A cycling Kalman filter for x_{k+1} = M x_k + q; holds the current mean and covariance."""

    M: torch.Tensor
    Q: torch.Tensor
    mean: torch.Tensor
    cov: torch.Tensor

    def forecast(self) -> None:
        self.mean, self.cov = forecast(self.mean, self.cov, self.M, self.Q)

    def update(self, H: torch.Tensor, R: torch.Tensor, y: torch.Tensor) -> None:
        self.mean, self.cov = analysis(self.mean, self.cov, H, R, y)
