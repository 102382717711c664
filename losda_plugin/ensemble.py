"""Calibration of a score-method analysis ensemble (``--members N``): relaxation to prior spread.

Each member's analysis is one posterior sample conditioned on its own background, so the analysis
spread comes from the backgrounds' spread pulled in by the observations plus the sampler's own
noise. When that falls short of the analysis error (under-dispersion, spread/skill below 1), RTPS
(Whitaker & Hamill 2012), the LETKF's usual cure, scales each state value's anomalies so that its
spread becomes (1 - alpha) sigma_a + alpha sigma_b, sigma_b the background ensemble's. The
ensemble mean is unchanged. (The same rule as baselines/enkf.py's ``rtps``, kept here so that the
two plugins stay independent.)
"""

from __future__ import annotations

import torch


def relax_to_prior_spread(analysis: torch.Tensor, background: torch.Tensor, alpha: float) -> torch.Tensor:
    """``analysis`` (members, ...) with each value's spread relaxed toward ``background``'s by ``alpha``."""
    mean = analysis.mean(0, keepdim=True)
    anom = analysis - mean
    post = anom.pow(2).sum(0).sqrt()  # unnormalised: the common 1/(N-1) cancels in the ratio
    prior = (background - background.mean(0, keepdim=True)).pow(2).sum(0).sqrt()
    # A value with no analysis spread has no direction to scale along: it is left as it is.
    ratio = torch.where(post > 0, prior / post.clamp_min(1e-300), torch.ones_like(post))
    return mean + anom * (1.0 + alpha * (ratio - 1.0))
