"""Summary scores as a DA reviewer checks them: exact sphere quadrature, O-B/O-A normalised by
the observation error, per-variable biases, and WeatherBench 2's spread/skill."""

import math

import pytest
import torch
from torch_harmonics.quadrature import legendre_gauss_weights

from interfaces.models import sphere


# --- area weights on the sphere -----------------------------------------------------------------
@pytest.mark.parametrize("nlat", [8, 32, 64])
def test_sphere_weights_are_the_gauss_legendre_weights(nlat):
    lat, _ = sphere.gaussian_grid(nlat, 2 * nlat)
    w = sphere.quadrature_weights(nlat)
    mu, q = legendre_gauss_weights(nlat)  # nodes and weights on [-1, 1], ascending in mu
    order = torch.as_tensor(mu).argsort(descending=True)  # rows run north to south
    assert torch.allclose(torch.sin(lat), torch.as_tensor(mu, dtype=torch.float64)[order], atol=1e-13)
    q = torch.as_tensor(q, dtype=torch.float64)[order]
    assert torch.allclose(w, q / q.mean(), rtol=1e-12, atol=0)
    assert w.mean().item() == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("nlat", [16, 32])
def test_area_means_integrate_polynomials_in_mu_exactly(nlat):
    """The sphere mean of mu**k is 1/(k+1) for even k; Y_2^0 ~ 3 mu**2 - 1 has mean zero. The
    quadrature weights get both to round-off up to degree 2 nlat - 1; the cell-boundary weights
    used before miss by ~1e-4 (32 rows), a bias the size of a small analysis error."""
    lat, _ = sphere.gaussian_grid(nlat, 2 * nlat)
    mu = torch.sin(lat)
    new, old = sphere.quadrature_weights(nlat), sphere.cell_boundary_weights(lat)
    for k in (2, 4, 2 * nlat - 2):
        exact = 1.0 / (k + 1)
        assert (new * mu**k).mean().item() == pytest.approx(exact, abs=1e-14)
        assert abs((old * mu**k).mean().item() - exact) > 1e-5
    assert abs((new * (3 * mu**2 - 1)).mean().item()) < 1e-14
    assert abs((old * (3 * mu**2 - 1)).mean().item()) > 1e-4


def test_shallow_water_area_weights_use_the_quadrature():
    from interfaces.models.sw import ShallowWater

    model = ShallowWater()  # building it runs no dynamics (spin-up is lazy)
    nlat, nlon = model.state_shape[1:]
    w = model.area_weights()
    assert torch.allclose(w[:, 0], sphere.quadrature_weights(nlat), rtol=1e-14, atol=0)
    assert torch.equal(w, w[:, :1].expand(nlat, nlon))
