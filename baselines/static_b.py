"""Static background-error covariance B for 3D-Var, estimated once per experiment.

Two sources of error samples:
- ``climatology``: anomalies of climatological states about their mean;
- ``nmc``: NMC-style forecast differences. Without an operational analysis cycle we take
  pairs of forecasts of the same length started from a climatological state and from that state
  plus a small perturbation (a stand-in for analysis error); their difference samples how errors
  grow over ``lead`` cycles, which gives flow-shaped (not merely climatological) correlations;
  a stochastic model adds its own noise to each forecast, so model error enters B too.

The model may supply a B of its own (``Model.static_covariance``, e.g. spherical-harmonic
correlations on the sphere); otherwise B is the sample covariance of the samples, dense for
small states and in square-root form from the samples themselves for large ones.
``scale`` multiplies B in every case.
"""

from __future__ import annotations

import math

import torch

from interfaces.cache import progress_bar
from interfaces.covariance import BackgroundCovariance, DenseCovariance
from interfaces.errors import UsageError

#: Above this state size a dense n x n B is not formed.
DENSE_LIMIT = 6000


class SampleCovariance(BackgroundCovariance):
    """B = scale * A^T A / (n - 1) kept as its square root S = sqrt(scale / (n-1)) A^T
    (rank n - 1 at most): matrix-free for any state size."""

    def __init__(self, anomalies: torch.Tensor, scale: float = 1.0):
        flat = anomalies.reshape(anomalies.shape[0], -1).to(torch.float64)
        flat = flat - flat.mean(0)
        self.factor = flat * math.sqrt(scale / max(flat.shape[0] - 1, 1))  # (n_ctrl, n_state)
        self.n_ctrl = flat.shape[0]

    def sqrt(self, v):
        return v @ self.factor.to(v.dtype)

    def sqrt_t(self, x):
        return x @ self.factor.T.to(x.dtype)


def climatological_anomalies(climatology: torch.Tensor) -> torch.Tensor:
    clim = climatology.to(torch.float64)
    return clim - clim.mean(0)


def nmc_differences(model, climatology: torch.Tensor, lead: int, perturbation: float,
                    generator: torch.Generator, samples: int = 500, bar=None) -> torch.Tensor:
    """Differences of ``lead``-cycle forecasts from perturbed and unperturbed climatological
    states (``samples`` of them, evenly spaced, to bound the cost of the forecasts); the
    perturbation std is ``perturbation`` times each value's climatological std. ``bar`` (a
    progress bar) advances by one per batched forecast."""
    std = climatology.to(torch.float64).std(0)
    step = max(1, climatology.shape[0] // max(samples, 2))
    clim = climatology[::step][:samples].to(torch.float64)
    noise = torch.randn(clim.shape, generator=generator, dtype=torch.float64) * std * perturbation
    a, b = clim, clim + noise
    for _ in range(lead):  # independent model noise (if the model has any) in each forecast
        a = model.forecast(a, generator)
        b = model.forecast(b, generator)
        if bar is not None:
            bar.update(2)
    diff = b - a
    return diff - diff.mean(0)


def estimate(model, climatology: torch.Tensor, source: str = "climatology", scale: float = 1.0,
             lead: int = 2, perturbation: float = 0.1, generator: torch.Generator | None = None,
             samples: int = 500, progress: bool = False) -> BackgroundCovariance:
    """The static B of ``model`` from samples of ``source`` ('climatology' or 'nmc'), times
    ``scale``; with ``progress``, under a progress bar (the NMC forecasts take a minute on the sphere)."""
    if scale <= 0:
        raise UsageError(f"B scale must be positive, got {scale}")
    if source not in ("climatology", "nmc"):
        raise UsageError(f"unknown B source '{source}'; valid sources: climatology, nmc")
    forecasts = 2 * lead if source == "nmc" else 0
    with progress_bar(forecasts + 1, f"3dvar: {source} B on {model.name}", progress, "step") as bar:
        if source == "climatology":
            samples = climatological_anomalies(climatology)
        else:
            samples = nmc_differences(model, climatology, lead, perturbation, generator or torch.Generator(), samples, bar)
        own = model.static_covariance(samples, scale)
        bar.update(1)
    if own is not None:
        return own
    flat = samples.reshape(samples.shape[0], -1)
    if flat.shape[1] <= DENSE_LIMIT:
        return DenseCovariance(scale * flat.T @ flat / max(flat.shape[0] - 1, 1))
    return SampleCovariance(samples, scale)
