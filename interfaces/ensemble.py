"""Relaxation to prior spread (RTPS; Whitaker & Hamill 2012), shared by every method that returns
an analysis ensemble: the classical filters (baselines/enkf.py, letkf.py, ensf.py) and the score
methods' posterior-sample ensembles (losda_plugin/methods.py). Each state value's analysis
spread becomes (1 - alpha) sigma_a + alpha sigma_b; the ensemble mean is unchanged.
"""

from __future__ import annotations

import torch


def rtps(post_anom: torch.Tensor, prior_spread: torch.Tensor, alpha: float) -> torch.Tensor:
    """Relax the posterior anomalies ``post_anom`` (members, ...) so that each value's spread moves
    toward ``prior_spread`` (the prior anomalies' root sum of squares, unnormalised: the common
    1/(N-1) cancels in the ratio) by ``alpha``. A value with no posterior spread has no direction
    to scale along and is left as it is."""
    post_spread = post_anom.pow(2).sum(0).sqrt()
    ratio = torch.where(post_spread > 0, prior_spread / post_spread.clamp_min(1e-300), torch.ones_like(post_spread))
    return post_anom * (1.0 + alpha * (ratio - 1.0))


def relax_to_prior_spread(analysis: torch.Tensor, background: torch.Tensor, alpha: float) -> torch.Tensor:
    """``analysis`` (members, ...) with each value's spread relaxed toward ``background``'s by ``alpha``."""
    mean = analysis.mean(0, keepdim=True)
    prior = (background - background.mean(0, keepdim=True)).pow(2).sum(0).sqrt()
    return mean + rtps(analysis - mean, prior, alpha)
