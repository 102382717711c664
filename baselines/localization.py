"""Gaspari-Cohn localisation: the compactly supported 5th-order correlation function
(Gaspari & Cohn 1999, eq. 4.10), and the observation weights a local analysis uses.

``half_width`` is c in the paper: the weight is 1 at distance 0, about 0.21 at c, and exactly 0
from 2c on.
"""

from __future__ import annotations

import torch


def gaspari_cohn(distance: torch.Tensor, half_width: float) -> torch.Tensor:
    """GC weights for distances (any shape); 0 beyond ``2 * half_width``."""
    r = torch.as_tensor(distance, dtype=torch.float64).abs() / float(half_width)
    inner = (((-0.25 * r + 0.5) * r + 0.625) * r - 5.0 / 3.0) * r**2 + 1.0
    # The outer branch has a 1/r term; r >= 1 there, so clamping keeps the division safe.
    ro = r.clamp_min(1.0)
    outer = ((((ro / 12.0 - 0.5) * ro + 0.625) * ro + 5.0 / 3.0) * ro - 5.0) * ro + 4.0 - 2.0 / (3.0 * ro)
    w = torch.where(r <= 1.0, inner, torch.where(r < 2.0, outer, torch.zeros_like(r)))
    return w.clamp_min(0.0)  # round-off near r = 2 can give -1e-16


def observation_weights(model, locations: torch.Tensor, half_width: float, chunk: int = 1024,
                        sparse_above: int = 4_000_000) -> torch.Tensor:
    """GC weights between every model grid point and every observation, (n_points, n_obs).

    Dense for small problems; for large ones (n_points * n_obs above ``sparse_above``) built in
    chunks of grid points and returned as a sparse (COO) matrix, since only obs within 2c count.
    Observations sharing a site (several variables observed there) share one distance.
    """
    points = model.point_coords()
    sites, inverse = torch.unique(locations, dim=0, return_inverse=True)
    n_points, n_obs = points.shape[0], locations.shape[0]
    if n_points * n_obs <= sparse_above:
        return gaspari_cohn(model.distance(points, sites), half_width)[:, inverse]
    rows, cols, vals = [], [], []
    for start in range(0, n_points, chunk):
        d = model.distance(points[start:start + chunk], sites)[:, inverse]
        r, c = torch.nonzero(d < 2.0 * half_width, as_tuple=True)
        rows.append(r + start)
        cols.append(c)
        vals.append(gaspari_cohn(d[r, c], half_width))
    index = torch.stack([torch.cat(rows), torch.cat(cols)])
    # Built from unique (row, col) pairs in row-major order, so it is coalesced by construction.
    return torch.sparse_coo_tensor(index, torch.cat(vals), (n_points, n_obs), is_coalesced=True,
                                   check_invariants=False)
