"""Verification scores, following WeatherBench 2's definitions.

Fields are shaped (..., *state_shape); ``weights`` are the model's area weights over the
spatial axes (mean 1), so RMSEs are area-weighted on the sphere and plain elsewhere.
"""

from __future__ import annotations

import math

import torch


def _spatial_mean(field: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean over the trailing spatial axes (weights have mean 1)."""
    dims = tuple(range(-weights.dim(), 0))
    return (field * weights.to(field.dtype)).mean(dim=dims)


def per_variable(field: torch.Tensor, weights: torch.Tensor, has_channels: bool) -> torch.Tensor:
    """Spatial mean per variable: (..., C) for multi-variable states, (..., 1) otherwise."""
    out = _spatial_mean(field, weights)
    return out if has_channels else out.unsqueeze(-1)


def rmse(estimate, truth, weights, has_channels=False) -> torch.Tensor:
    """Area-weighted RMSE per variable, shaped (..., C)."""
    return per_variable((estimate - truth) ** 2, weights, has_channels).sqrt()


def bias(estimate, truth, weights, has_channels=False) -> torch.Tensor:
    """Area-weighted mean error per variable, shaped (..., C)."""
    return per_variable(estimate - truth, weights, has_channels)


def spread(ensemble, weights, has_channels=False) -> torch.Tensor:
    """Root of the area-weighted mean ensemble variance (unbiased), per variable (C,)."""
    if ensemble.shape[0] < 2:
        return torch.full((ensemble.shape[1] if has_channels else 1,), float("nan"), dtype=torch.float64)
    return per_variable(ensemble.var(0, unbiased=True), weights, has_channels).sqrt()


def spread_skill(spread_value: float, skill_value: float, members: int) -> float:
    """WeatherBench 2's spread/skill ratio, sqrt((N+1)/N) * spread / skill, where spread is the
    root of the time-mean ensemble variance and skill the root of the time-mean squared error of
    the ensemble mean (both area-weighted): the ratios of time-mean RMSs, not of mean RMSEs."""
    if skill_value == 0:
        return math.inf if spread_value > 0 else math.nan
    return math.sqrt((members + 1) / members) * spread_value / skill_value


def crps_fair(ensemble, truth, weights, has_channels=False) -> torch.Tensor:
    """Fair CRPS per variable: E|X - y| - 1/(2 N (N-1)) sum_ij |X_i - X_j|, area-weighted (C,).

    The pairwise term is computed from the sorted ensemble in O(N log N).
    """
    n = ensemble.shape[0]
    skill = (ensemble - truth).abs().mean(0)
    if n < 2:
        return per_variable(skill, weights, has_channels)
    sorted_ens = ensemble.sort(0).values
    rank = torch.arange(1, n + 1, dtype=ensemble.dtype).reshape(-1, *([1] * (ensemble.dim() - 1)))
    pair_sum = 2.0 * ((2.0 * rank - n - 1.0) * sorted_ens).sum(0)  # sum over i, j of |X_i - X_j|
    return per_variable(skill - pair_sum / (2.0 * n * (n - 1)), weights, has_channels)


def departures_rms(values: torch.Tensor, model_equivalent: torch.Tensor, std: torch.Tensor | None = None) -> float:
    """RMS of observation-space departures y - H(x) (O-B or O-A) over the values given, in the
    observations' units; with ``std`` each departure is first divided by its observation-error
    std (dimensionless: E = 1 + HBH^T/R per value for O-B with background covariance B)."""
    if values.numel() == 0:
        return float("nan")
    departures = values - model_equivalent
    if std is not None:
        departures = departures / std
    return float((departures ** 2).mean().sqrt())


def combine(per_var: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """One overall score from per-variable RMSEs (..., C): the RMSE itself for one variable,
    else the root mean square of the RMSEs normalised by each variable's climatological std."""
    if per_var.shape[-1] == 1 or scale is None:
        return per_var[..., 0] if per_var.shape[-1] == 1 else per_var.pow(2).mean(-1).sqrt()
    return (per_var / scale.to(per_var.dtype)).pow(2).mean(-1).sqrt()
