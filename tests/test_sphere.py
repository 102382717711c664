"""Sphere utilities: grid, WeatherBench-2 area weights, great-circle distance, bilinear
interpolation to stations and the spherical static B."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from interfaces.models import sphere

LAT, LON = sphere.gaussian_grid(32, 64)


R = sphere.EARTH_RADIUS_KM

lats = st.floats(-math.pi / 2, math.pi / 2, allow_nan=False)
lons = st.floats(-2 * math.pi, 4 * math.pi, allow_nan=False)
points = st.tuples(lats, lons)


def test_gaussian_grid_runs_north_to_south_symmetrically():
    assert LAT.shape == (32,) and LON.shape == (64,)
    assert torch.all(LAT[:-1] > LAT[1:])
    assert torch.allclose(LAT, -LAT.flip(0), atol=1e-14)
    assert LON[0] == 0 and torch.allclose(LON.diff(), torch.full((63,), 2 * math.pi / 64, dtype=torch.float64))


def test_cell_boundary_weights_mean_one_symmetric_and_area_like():
    w = sphere.cell_boundary_weights(LAT)
    assert w.mean().item() == pytest.approx(1.0, abs=1e-14)
    assert torch.allclose(w, w.flip(0), atol=1e-14)
    # The bands tile the sphere, so the weights are close to cos(lat) renormalised.
    cos = torch.cos(LAT) / torch.cos(LAT).mean()
    assert torch.allclose(w, cos, rtol=0.05, atol=0.02)
    # A south-to-north grid gets the same weights, reversed.
    assert torch.allclose(sphere.cell_boundary_weights(LAT.flip(0)), w.flip(0), atol=1e-14)


@settings(max_examples=60, deadline=None)
@given(points, points, points)
def test_great_circle_is_a_metric(a, b, c):
    p = torch.tensor([a, b, c], dtype=torch.float64)
    d = sphere.great_circle(p, p)
    assert torch.allclose(d, d.T, atol=1e-9)
    assert torch.all(d.diagonal().abs() < 1e-6)
    assert torch.all(d >= 0) and torch.all(d <= math.pi * R + 1e-6)
    assert d[0, 2] <= d[0, 1] + d[1, 2] + 1e-6


def test_great_circle_known_values():
    pole, eq0, eq90 = [math.pi / 2, 0.0], [0.0, 0.0], [0.0, math.pi / 2]
    d = sphere.great_circle(torch.tensor([pole, eq0]), torch.tensor([eq0, eq90]))
    quarter = math.pi * R / 2
    assert torch.allclose(d, torch.tensor([[quarter, quarter], [0.0, quarter]], dtype=torch.float64))


def _interp(field, coords):
    index, weight = sphere.bilinear(LAT, LON, coords)
    return (field.reshape(-1)[index] * weight).sum(1), index, weight


@settings(max_examples=60, deadline=None)
@given(st.floats(float(LAT[-1]), float(LAT[0])), st.floats(0.0, float(LON[-1])),
       st.floats(-3, 3), st.floats(-3, 3), st.floats(-3, 3))
def test_bilinear_exact_for_linear_functions_inside_the_grid(lat, lon, a, b, c):
    field = a + b * LAT[:, None] + c * LON[None, :]
    value, _, weight = _interp(field, torch.tensor([[lat, lon]], dtype=torch.float64))
    assert value.item() == pytest.approx(a + b * lat + c * lon, abs=1e-9)
    assert torch.all(weight >= 0) and weight.sum().item() == pytest.approx(1.0)


def test_bilinear_wraps_longitude_and_matches_grid_points():
    coords = torch.tensor([[float(LAT[5]), float(LON[10])], [0.1, 2 * math.pi - 0.01], [0.1, -0.01]], dtype=torch.float64)
    index, weight = sphere.bilinear(LAT, LON, coords)
    assert weight[0].max().item() == pytest.approx(1.0)
    assert index[0, weight[0].argmax()] == 5 * 64 + 10
    # Just west of 0 E the site sits between the last column and column 0.
    for row in (1, 2):
        cols = set((index[row] % 64).tolist())
        assert cols == {63, 0}
    assert torch.allclose(weight[1], weight[2])


def test_bilinear_polar_caps_are_continuous_and_accurate():
    field = torch.sin(LAT)[:, None].expand(32, 64)  # smooth across the pole
    edge = float(LAT[0])
    lon = torch.linspace(0, 2 * math.pi, 17, dtype=torch.float64)[:-1]
    inside, _, _ = _interp(field, torch.stack([torch.full_like(lon, edge - 1e-9), lon], 1))
    outside, _, w = _interp(field, torch.stack([torch.full_like(lon, edge + 1e-9), lon], 1))
    assert torch.allclose(inside, outside, atol=1e-8)
    for lat in (edge + 0.01, (edge + math.pi / 2) / 2, math.pi / 2, -math.pi / 2):
        coords = torch.stack([torch.full_like(lon, lat), lon], 1)
        value, index, weight = _interp(field, coords)
        assert torch.allclose(weight.sum(1), torch.ones(16, dtype=torch.float64))
        assert torch.all(weight >= 0) and torch.all((index >= 0) & (index < 32 * 64))
        # Linear across the pole: errors of second order in the cap's width only.
        assert torch.allclose(value, torch.full_like(value, math.sin(lat)), atol=3e-3)


def test_random_sphere_points_are_uniform_in_sin_lat():
    p = sphere.random_sphere_points(20000, torch.Generator().manual_seed(0))
    assert p[:, 0].abs().max() <= math.pi / 2 and p[:, 1].min() >= 0 and p[:, 1].max() < 2 * math.pi
    assert torch.sin(p[:, 0]).mean().abs() < 0.02
    assert (p[:, 0].abs() < math.pi / 6).double().mean().item() == pytest.approx(0.5, abs=0.02)


# --- the spherical B ---------------------------------------------------------------------------

def _tiny_covariance(seed=0, nlat=8, nlon=16, lmax=6):
    g = torch.Generator().manual_seed(seed)
    std = 1 + torch.rand(3, nlat, generator=g, dtype=torch.float64)
    spectrum = torch.rand(3, lmax, generator=g, dtype=torch.float64) + 0.1
    return sphere.SphericalCovariance(std, spectrum, nlon, scale=2.0)


def test_spherical_b_is_symmetric_psd_with_the_given_variances():
    B = _tiny_covariance()
    dense = B.dense()
    assert dense.shape == (3 * 8 * 16, 3 * 8 * 16)
    assert torch.allclose(dense, dense.T, atol=1e-12)
    assert torch.linalg.eigvalsh(dense).min() > -1e-10
    # Unit correlation on the diagonal: the variance is scale * std**2 at every point.
    expected = (B.std**2)[:, :, None].expand(3, 8, 16).reshape(-1)
    assert torch.allclose(dense.diagonal(), expected, rtol=1e-6)  # Legendre tables: ~1e-8
    # Isotropy: the correlation between two points depends only on their distance.
    c = dense[: 8 * 16, : 8 * 16] / dense.diagonal()[: 8 * 16].sqrt()[:, None] / dense.diagonal()[: 8 * 16].sqrt()[None, :]
    c = c.reshape(8, 16, 8, 16)
    assert torch.allclose(c[3, 0, 3, 5], c[3, 2, 3, 7], atol=1e-10)
    # No cross-variable covariance.
    assert dense[: 8 * 16, 8 * 16:].abs().max() < 1e-12


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000))
def test_spherical_b_sqrt_t_is_the_adjoint_with_the_right_quadratic_form(seed):
    nlat, nlon = 16, 32
    B = _tiny_covariance(seed % 7, nlat=nlat, nlon=nlon, lmax=12)
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(3, B.n_ctrl, generator=g, dtype=torch.float64)
    x = torch.randn(3, 3 * nlat * nlon, generator=g, dtype=torch.float64)
    lhs = (B.sqrt(v) * x).sum(1)
    rhs = (v * B.sqrt_t(x)).sum(1)
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-9)
    assert B.n_ctrl == 3 * 12**2

    def quadratic(y):  # y^T B y = |S^T y|^2
        return B.sqrt_t(y).pow(2).sum(1)

    # At a single grid point the quadratic form is that point's variance, std**2 (unit correlation).
    c, i, j = seed % 3, (seed // 3) % nlat, (seed // 48) % nlon
    point = torch.zeros(1, 3, nlat, nlon, dtype=torch.float64)
    point[0, c, i, j] = 1.0
    assert quadratic(point.reshape(1, -1)).item() == pytest.approx(B.std[c, i].item() ** 2, rel=1e-6)
    # Isotropy: shifting a field by whole grid columns in longitude leaves x^T B x unchanged.
    shifted = x.reshape(3, 3, nlat, nlon).roll(1 + seed % (nlon - 1), dims=-1).reshape(3, -1)
    assert torch.allclose(quadratic(shifted), quadratic(x), rtol=1e-9)


def test_estimated_covariance_recovers_std_and_correlation_scale():
    nlat, nlon, lmax = 16, 32, 12
    truth = _tiny_covariance(3, nlat, nlon, lmax)
    g = torch.Generator().manual_seed(1)
    samples = truth.sqrt(torch.randn(3000, truth.n_ctrl, generator=g, dtype=torch.float64))
    est = sphere.estimate_covariance(samples.reshape(-1, 3, nlat, nlon), lmax)
    assert torch.allclose(est.std, truth.std, rtol=0.08)
    assert torch.allclose(est.spectrum, truth.spectrum, rtol=0.25, atol=0.02)
