"""Additive inflation: random climatological anomalies added to the analysis members.

Model error adds variance in directions the forecast ensemble never explored, which
multiplicative inflation and RTPS (both rescale the ensemble's own anomalies) cannot supply.
The classic remedy adds random perturbations drawn from a climatological error sample
(Houtekamer et al. 2005; Whitaker et al. 2008 used 48-h minus 24-h forecast differences). Here
they are anomalies of the forecast model's climatology about its mean, scaled by ``size``.
"""

from __future__ import annotations

import torch


class ClimatologicalPerturbations:
    """Draws ``size`` x (a climatological state - the climatological mean), one per member, with
    the members' mean removed so that the analysis mean is kept."""

    def __init__(self, climatology: torch.Tensor):
        flat = climatology.reshape(climatology.shape[0], -1).to(torch.float64)
        if flat.shape[0] < 2:
            raise ValueError("additive inflation needs a climatology of at least 2 states")
        self.anomalies = flat - flat.mean(0)

    def draw(self, members: int, size: float, generator: torch.Generator) -> torch.Tensor:
        """(members, n_state) perturbations whose sample mean is zero. Their covariance is
        size^2 (members - 1) / members times the climatological covariance."""
        index = torch.randint(self.anomalies.shape[0], (members,), generator=generator)
        q = size * self.anomalies[index]
        return q - q.mean(0)
