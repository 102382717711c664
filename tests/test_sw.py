"""The `sw` testbed: conventions of the spectral dynamics, forecasts, caches, geometry and the
`stations` observation kind. Small grid, short runs (chaos and stationarity are measured by
benchmarks/sw_chaos.py)."""

import math

import pytest
import torch

from interfaces.errors import UsageError
from interfaces.models.sw import RADIUS, Dynamics, ShallowWater
from interfaces.observations import build_operator
from interfaces.registry import build_registry

# A cheap configuration: short spin-up, few trajectories (tests check mechanics, not climate).
SMALL = dict(spinup_days=1.0, init_days=0.5, clim_members=4, clim_spacing=1)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m = ShallowWater(**SMALL)
    m.cache_dir = tmp_path_factory.mktemp("sw-cache")
    return m


@pytest.fixture(scope="module")
def states(model):
    return model.initial_states(2, torch.Generator().manual_seed(0))


def test_registered_with_stations_and_options_checked():
    reg = build_registry()
    assert reg.model("sw").factory is ShallowWater and "stations" in reg.observation_kinds
    assert not [p for p in reg.problems if p[0] == "models"]
    big = ShallowWater(resolution="64x128", drag_days="5")
    assert big.state_shape == (3, 64, 128) and big.steps_per_cycle == 90 and big.options["drag_days"] == 5.0
    for bad in ({"resolution": "10x20"}, {"precision": "float16"}, {"relax_days": 0.0}, {"nope": 1}):
        with pytest.raises(UsageError):
            ShallowWater(**bad)


def test_metadata(model):
    assert model.variables == ("h", "u", "v") and model.units == ("m", "m s-1", "m s-1")
    assert model.standard_names == ("geopotential_height", "eastward_wind", "northward_wind")
    assert model.cycle_length == 6.0 and model.time_units == "hours" and model.steps_per_cycle == 48
    assert len(model.default_obs_std) == 3 and all(s > 0 for s in model.default_obs_std)
    assert 1000 <= model.default_length_scale() <= 3000


def test_wind_conventions_solid_body_rotation():
    dyn = Dynamics(32, 64, 22, 450.0, 24.0, 1e4, 80.0, 45.0, 10.0, 0.5, 10.0, False, torch.float64)
    lat = dyn.lat[:, None].expand(32, 64)
    U = 20.0
    uv = torch.stack([U * torch.cos(lat), torch.zeros_like(lat)])[None]
    vd = dyn.isht(dyn.vort_div(uv))
    assert torch.allclose(vd[0, 0], 2 * U / RADIUS * torch.sin(lat), atol=1e-12)
    assert vd[0, 1].abs().max() < 1e-12
    # A purely divergent flow: v = V cos(lat) sin(lat)... is recovered through the round trip.
    x = torch.cat([torch.full((1, 1, 32, 64), 1e4, dtype=torch.float64), uv], 1)
    x[0, 2] = 5 * torch.cos(lat) * torch.sin(lat)
    assert torch.allclose(dyn.to_grid(dyn.to_spectral(x)), x, atol=1e-9)


def test_balanced_jets_are_a_steady_state_of_the_unforced_dynamics():
    dyn = Dynamics(32, 64, 22, 450.0, 24.0, 1e4, 80.0, 45.0, 10.0, 0.5, 10.0, False, torch.float64)
    eq = dyn.equilibrium
    dynamics_only = dyn.tendency(eq) - dyn.forcing + dyn.rate * eq
    scale = eq.abs().amax(dim=(-2, -1))  # per field; divergence (zero) measured like vorticity
    scale[:, 1] = scale[:, 0]
    assert (dynamics_only.abs().amax(dim=(-2, -1)) / scale).max() * 86400 < 1e-8
    grid = dyn.to_grid(eq)[0]
    assert grid[1].max() == pytest.approx(80.0, rel=0.1) and grid[2].abs().max() < 1e-9
    # Mean fluid depth 10 km (no orography here): the height's mean is 10 km.
    assert eq[0, 2, 0, 0].real / math.sqrt(4 * math.pi) == pytest.approx(1e4)


def test_forecast_shapes_finite_deterministic_and_batch_independent(model, states):
    assert states.shape == (2, 3, 32, 64) and states.dtype == torch.float64
    x = states
    for _ in range(4):
        x = model.forecast(x)
        assert x.shape == (2, 3, 32, 64) and x.dtype == torch.float64 and torch.isfinite(x).all()
    assert torch.equal(model.forecast(states), model.forecast(states.clone()))
    one = model.forecast(states[1:])
    assert torch.allclose(one[0], model.forecast(states)[1], rtol=1e-4, atol=1e-2)
    # Winds stay physical: |u|, |v| well under the gravity-wave speed.
    assert x[:, 1:].abs().max() < 200 and (x[:, 0] > 0).all()


def test_mass_is_conserved(model, states):
    w = model.area_weights()
    before = (states[:, 0] * w).mean(dim=(-2, -1))
    after = (model.forecast(states)[:, 0] * w).mean(dim=(-2, -1))
    # Cell-boundary weights are not the Gaussian quadrature, hence the loose tolerance.
    assert torch.allclose(before, after, rtol=2e-4)
    spec0 = model.dyn.to_spectral(states)[:, 2, 0, 0].real
    spec1 = model.dyn.to_spectral(model.forecast(states))[:, 2, 0, 0].real
    assert torch.allclose(spec0, spec1, rtol=1e-5)


def test_initial_states_and_truth_depend_on_the_generator_only(model, states):
    again = model.initial_states(2, torch.Generator().manual_seed(0))
    other = model.initial_states(2, torch.Generator().manual_seed(1))
    assert torch.equal(states, again)
    assert (states - other)[:, 0].abs().mean() > 1.0
    truth = model.truth_run(2, torch.Generator().manual_seed(3))
    assert truth.shape == (3, 3, 32, 64) and torch.isfinite(truth).all()


def test_climatology_cache_round_trip_extension_and_regeneration(tmp_path):
    m = ShallowWater(**SMALL)
    m.cache_dir = tmp_path
    clim = m.climatology(6)
    path = m.cache_path("clim")
    assert clim.shape == (6, 3, 32, 64) and clim.dtype == torch.float64 and path.exists()
    stamp = path.stat().st_mtime_ns
    assert torch.equal(m.climatology(6), clim) and path.stat().st_mtime_ns == stamp  # read back
    assert torch.equal(m.climatology(3), clim[:3])
    longer = m.climatology(10)  # extends the cached run, keeping what was there
    assert longer.shape[0] == 10 and torch.equal(longer[:6], clim)
    path.write_bytes(b"not a netCDF file")
    assert torch.equal(m.climatology(6), clim)  # regenerated identically
    path.unlink()
    assert torch.equal(m.climatology(6), clim)
    # The key follows the parameters: another configuration never reads this file.
    other = ShallowWater(**{**SMALL, "drag_days": 5.0})
    other.cache_dir = tmp_path
    assert other.cache_path("clim") != path
    # Independent of any experiment: a fresh model object reads the same samples.
    fresh = ShallowWater(**SMALL)
    fresh.cache_dir = tmp_path
    assert torch.equal(fresh.climatology(6), clim)


def test_cache_falls_back_to_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DA_HARNESS_CACHE", str(tmp_path))
    m = ShallowWater(**SMALL)
    assert m.cache_path("clim").parent == tmp_path


def test_geometry(model):
    pts = model.point_coords()
    assert pts.shape == (32 * 64, 2)
    assert torch.allclose(pts[1] - pts[0], torch.tensor([0.0, 2 * math.pi / 64], dtype=torch.float64))
    d = model.distance(pts[:3], pts[:3])
    assert d[0, 0] == 0 and d[0, 1] == pytest.approx(2 * math.pi * 6371 * math.cos(pts[0, 0]) / 64, rel=1e-3)
    w = model.area_weights()
    assert w.shape == (32, 64) and w.mean().item() == pytest.approx(1.0)
    assert model.contains(torch.tensor([[0.5, 7.0], [2.0, 0.0], [float("nan"), 0.0]])).tolist() == [True, False, False]
    coords = model.grid_coords()
    assert list(coords) == ["lat", "lon"]
    assert coords["lat"][2]["units"] == "degrees_north" and coords["lat"][1][0] > 80
    assert coords["lon"][2]["standard_name"] == "longitude" and coords["lon"][1][1] == pytest.approx(5.625)


def test_stations_interpolate_within_the_grid(model):
    reg = build_registry()
    op = build_operator("stations:50@h,u", model, torch.Generator().manual_seed(0), kinds=reg.kinds())
    assert op.n_obs == 100 and op.locations.shape == (100, 2) and op.linear
    assert op.channels.tolist() == [0] * 50 + [1] * 50
    # A state linear in latitude is reproduced exactly at stations between the outer rows.
    lat = model.lat[:, None].expand(32, 64)
    x = torch.zeros(1, 3, 32, 64, dtype=torch.float64)
    x[0, 0] = 1e4 + 500 * lat
    x[0, 1] = 10 * lat
    y = op(x)[0]
    inner = op.locations[:, 0].abs() <= model.lat[0]
    expected = torch.where(op.channels == 0, 1e4 + 500 * op.locations[:, 0], 10 * op.locations[:, 0])
    assert torch.allclose(y[inner], expected[inner], atol=1e-9)
    with pytest.raises(UsageError):
        build_operator("stations:0", model, torch.Generator(), kinds=reg.kinds())
    with pytest.raises(UsageError):
        build_operator("stations:x", model, torch.Generator(), kinds=reg.kinds())


def test_stations_need_a_model_on_the_sphere():
    reg = build_registry()
    l96 = reg.model("lorenz96").factory()
    with pytest.raises(UsageError, match="sphere"):
        build_operator("stations:5", l96, torch.Generator(), kinds=reg.kinds())


def test_static_covariance_from_climatology(model):
    clim = model.climatology(8)
    B = model.static_covariance(clim - clim.mean(0), 0.5)
    assert B.n_ctrl == 3 * 22**2
    v = torch.randn(2, B.n_ctrl, dtype=torch.float64)
    x = torch.randn(2, model.state_size, dtype=torch.float64)
    assert B.sqrt(v).shape == (2, model.state_size)
    assert torch.allclose((B.sqrt(v) * x).sum(1), (v * B.sqrt_t(x)).sum(1), rtol=1e-9)


def test_plots_from_arrays_and_run_like_datasets(tmp_path):
    pytest.importorskip("matplotlib")
    xr = pytest.importorskip("xarray")
    from interfaces import plots

    g = torch.Generator().manual_seed(0)
    truth = torch.randn(8, 16, generator=g).numpy()
    arrays = {"truth": truth, "background": truth + 1, "analysis": truth + 0.5}
    plots.cycle_maps(arrays, out=tmp_path / "a.png")
    lat, lon = torch.linspace(80, -80, 8).numpy(), torch.arange(16).numpy() * 22.5
    ds = xr.Dataset(
        {f"{r}_h": (("time", "lat", "lon"), torch.randn(3, 8, 16, generator=g).numpy()) for r in ("truth", "background", "analysis")}
        | {"analysis_rmse_h": ("time", [3.0, 2.0, 1.0]), "analysis_rmse": ("time", [1.0, 0.5, 0.2])},
        coords={"lat": lat, "lon": lon, "cycle": ("time", [0, 1, 2])},
    )
    plots.cycle_maps(ds, cycle=1, variable="h", out=tmp_path / "b.png")
    plots.rmse_vs_cycle({"x": ds, "y": ds}, variable="h", out=tmp_path / "c.png")
    plots.rmse_vs_cycle({"x": ds}, out=tmp_path / "d.png")
    assert all((tmp_path / f"{n}.png").stat().st_size > 1000 for n in "abcd")
    with pytest.raises(UsageError):
        plots.cycle_maps(ds, variable="q")
