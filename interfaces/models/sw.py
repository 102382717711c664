"""Forced-dissipative shallow water on the sphere, batched over members (the `sw` testbed).

Prognostic: vorticity, divergence and free-surface height, spectral (torch-harmonics transforms
on a Gauss-Legendre grid); the state handed to the harness is (members, 3, nlat, nlon) with
channels h (m), u, v (m s-1). The configuration follows issue 7's measured one: mean depth
10 km, continuity flux with the depth above orography, the zonal-mean (m = 0) part of height
and vorticity relaxed in 0.5 day toward two balanced 80 m/s jets (m = 0 divergence toward zero),
10-day linear drag on vorticity and divergence, two Gaussian mountains, AB3 time stepping and an
8th-order hyperdiffusion applied after each step.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
import torch_harmonics as th

from .. import cache
from ..errors import UsageError
from ..observations import PointSet, positive_int
from ..options import resolve
from . import sphere
from .base import Model

RADIUS = sphere.EARTH_RADIUS_KM * 1e3  # m
OMEGA = 7.292e-5  # s-1
GRAVITY = 9.80616  # m s-2
DAY = 86400.0
#: Per resolution: (nlat, nlon, lmax, dt in s, hyperdiffusion e-folding time in hours).
RESOLUTIONS = {"32x64": (32, 64, 22, 450.0, 24.0), "64x128": (64, 128, 43, 240.0, 12.0)}
#: The layout of the cache files (part of their names). The numbers in them are versioned by
#: the source of the code that computes them, checked on every read (see ``cache_version``).
CACHE_FORMAT = 1
#: That code, and the libraries whose arithmetic enters the cached states: an edit there
#: rebuilds the caches (saying so), an edit anywhere else reuses them.
CACHE_SOURCES = ("interfaces.models.sw", "interfaces.models.sphere")
CACHE_LIBRARIES = ("torch", "torch-harmonics")
CLIM_SEED, SPINUP_SEED = 7001, 7002


class Dynamics:
    """The spectral model: transforms, forcing fields and the AB3 integrator. Spectral states
    are complex tensors (batch, 3, lmax, mmax) holding vorticity, divergence and height."""

    def __init__(self, nlat, nlon, lmax, dt, hyper_hours, mean_depth, jet_speed, jet_lat, jet_width,
                 relax_days, drag_days, orography, dtype):
        self.nlat, self.nlon, self.lmax, self.dt = nlat, nlon, lmax, dt
        self.dtype = dtype
        kw = dict(lmax=lmax, mmax=lmax, grid=sphere.GRID)
        self.sht = th.RealSHT(nlat, nlon, **kw).to(dtype)
        self.isht = th.InverseRealSHT(nlat, nlon, **kw).to(dtype)
        self.vsht = th.RealVectorSHT(nlat, nlon, **kw).to(dtype)
        self.ivsht = th.InverseRealVectorSHT(nlat, nlon, **kw).to(dtype)
        lat, lon = sphere.gaussian_grid(nlat, nlon)
        self.lat, self.lon = lat, lon
        l = torch.arange(lmax, dtype=torch.float64)[:, None]
        ll = l * (l + 1)
        self.ll = ll.to(dtype)  # -laplacian eigenvalue times a^2
        self.inv_ll = torch.where(ll > 0, 1 / ll.clamp_min(1), 0.0).to(dtype)
        L = lmax - 1
        self.hyper = torch.exp(-dt / (hyper_hours * 3600) * (ll / (L * (L + 1))) ** 4).to(dtype)
        self.coriolis = (2 * OMEGA * torch.sin(lat))[:, None].expand(nlat, nlon).to(dtype)

        grid_lat = lat[:, None].expand(nlat, nlon)
        grid_lon = lon[None, :].expand(nlat, nlon)
        hs = torch.zeros(nlat, nlon, dtype=torch.float64)
        if orography:
            for height, mlat, mlon in ((3000.0, 45.0, 90.0), (2000.0, 45.0, 250.0)):
                centre = torch.tensor([[math.radians(mlat), math.radians(mlon)]], dtype=torch.float64)
                pts = torch.stack([grid_lat.reshape(-1), grid_lon.reshape(-1)], 1)
                d = sphere.great_circle(pts, centre, 1.0).reshape(nlat, nlon)
                hs += height * torch.exp(-((d / math.radians(15.0)) ** 2))
        # Truncated to the model's resolution so the lower boundary carries no unresolved scales.
        self.orography = self.isht(self.sht(hs.to(dtype)))

        u_eq = sum(jet_speed * torch.exp(-(((lat - math.radians(c)) / math.radians(jet_width)) ** 2))
                   for c in (jet_lat, -jet_lat))
        self.equilibrium = self.balanced_zonal(u_eq.to(dtype), mean_depth)
        # Linear part of the forcing: r (X_eq - X) on m = 0, minus drag d X on vorticity and
        # divergence; split into a constant and a rate so the tendency is  const - rate * X.
        rate = torch.zeros(3, lmax, lmax, dtype=dtype)
        rate[:, :, 0] += 1 / (relax_days * DAY)
        rate[:2] += 1 / (drag_days * DAY)
        self.rate = rate
        target = self.equilibrium[0].clone()
        target[1] = 0
        target[:, :, 1:] = 0
        self.forcing = target * (1 / (relax_days * DAY))

    # --- transforms between the spectral state and winds ---------------------------------
    def winds(self, spec):
        """(u, v) grid winds (batch, 2, nlat, nlon) from spectral vorticity and divergence.

        torch-harmonics' inverse vector transform of (S, T) is grad S - k x grad T in
        (colatitude, longitude) components, and V = grad chi + k x grad psi with
        chi = -a^2 div / l(l+1), psi = -a^2 vort / l(l+1); winds are grad / a.
        """
        st = torch.stack([-spec[:, 1], spec[:, 0]], 1) * (RADIUS * self.inv_ll)
        vt = self.ivsht(st)
        return torch.stack([vt[:, 1], -vt[:, 0]], 1)

    def vort_div(self, uv):
        """Spectral (vorticity, divergence) (batch, 2, l, m) of grid winds (batch, 2, nlat, nlon)."""
        st = self.vsht(torch.stack([-uv[:, 1], uv[:, 0]], 1))
        return torch.stack([st[:, 1], -st[:, 0]], 1) * (self.ll / RADIUS)

    def to_spectral(self, x):
        """Grid state (batch, 3, nlat, nlon) with channels h, u, v -> spectral state."""
        x = x.to(self.dtype)
        vd = self.vort_div(x[:, 1:])
        return torch.cat([vd, self.sht(x[:, :1])], 1)

    def to_grid(self, spec):
        return torch.cat([self.isht(spec[:, 2:3]), self.winds(spec)], 1)

    def balanced_zonal(self, u, mean_depth):
        """Spectral state of the zonal flow u(lat) in nonlinear balance (an exact steady state
        of the unforced, flat-bottomed equations), with mean fluid depth ``mean_depth``."""
        uv = torch.stack([u[:, None].expand(self.nlat, self.nlon), torch.zeros(self.nlat, self.nlon, dtype=u.dtype)])[None]
        vd = self.vort_div(uv)
        vd[:, 1] = 0
        spec = torch.cat([vd, torch.zeros_like(vd[:, :1])], 1)
        # With zero divergence the divergence tendency vanishes iff g h + E = a T(eta V).
        flux = self._flux_transform(spec, torch.zeros(1, self.nlat, self.nlon, dtype=u.dtype))
        _, rot, energy = flux
        h = -(RADIUS * rot[:, 0] + energy[:, 0]) / GRAVITY
        h[:, 0, 0] = (mean_depth + self.orography.mean()) * math.sqrt(4 * math.pi)
        spec[:, 2] = h
        return spec

    # --- dynamics ----------------------------------------------------------------------------
    def _flux_transform(self, spec, height):
        """Spheroidal/toroidal parts of eta V and D V, and the spectral kinetic energy."""
        uv = self.winds(spec)
        grid = self.isht(spec[:, ::2])  # vorticity and height (l=0 of h holds its mean)
        eta = grid[:, 0] + self.coriolis
        depth = grid[:, 1] - self.orography if height is None else height
        fluxes = torch.stack([eta[:, None] * uv, depth[:, None] * uv], 1)
        # Back to (colatitude, longitude) components for the vector transform.
        st = self.vsht(torch.stack([-fluxes[:, :, 1], fluxes[:, :, 0]], 2))  # (batch, 2, 2, l, m)
        energy = self.sht(0.5 * (uv**2).sum(1, keepdim=True))
        return st[:, :, 0], st[:, :, 1], energy

    def tendency(self, spec):
        spheroidal, toroidal, energy = self._flux_transform(spec, None)
        k = self.ll / RADIUS
        dvort = k * spheroidal[:, 0]  # -div(eta V)
        ddiv = k * toroidal[:, 0] + (k / RADIUS) * (energy[:, 0] + GRAVITY * spec[:, 2])
        dh = k * spheroidal[:, 1]  # -div(D V)
        dyn = torch.stack([dvort, ddiv, dh], 1)
        return dyn + self.forcing - self.rate * spec

    def integrate(self, spec, steps, tick=None):
        """AB3, started with Euler and AB2 so each call depends on its initial state only.
        ``tick()``, if given, is called after each step (progress bars)."""
        dt = self.dt
        history = []
        for _ in range(steps):
            history.insert(0, self.tendency(spec))
            del history[3:]
            if len(history) == 1:
                inc = history[0]
            elif len(history) == 2:
                inc = 1.5 * history[0] - 0.5 * history[1]
            else:
                inc = (23 * history[0] - 16 * history[1] + 5 * history[2]) / 12
            spec = (spec + dt * inc) * self.hyper
            if tick is not None:
                tick()
        return spec


def _random_height_noise(dyn: Dynamics, n: int, rms: float, generator: torch.Generator) -> torch.Tensor:
    """Spectral height noise in total wavenumbers 1 to 10, scaled to ``rms`` metres per member."""
    L = dyn.lmax
    l = torch.arange(L)[:, None]
    m = torch.arange(L)[None, :]
    mask = ((l >= 1) & (l <= 10) & (m <= l)).to(dyn.dtype)
    re = torch.randn(n, L, L, generator=generator, dtype=torch.float64).to(dyn.dtype)
    im = torch.randn(n, L, L, generator=generator, dtype=torch.float64).to(dyn.dtype)
    noise = torch.complex(re, im) * mask
    size = dyn.isht(noise).pow(2).mean(dim=(1, 2)).sqrt()
    return noise * (rms / size)[:, None, None]


class ShallowWater(Model):
    name = "sw"
    description = "forced-dissipative shallow water on the sphere (h, u, v; Gauss-Legendre grid), 6-h cycles"
    defaults = {
        "resolution": "32x64",  # or 64x128
        "precision": "float32",  # internal arithmetic; states are returned in the caller's dtype
        "mean_depth": 10000.0,  # m, mean fluid depth
        "jet_speed": 80.0,  # m/s, the relaxation jets at +-jet_lat
        "jet_lat": 45.0,
        "jet_width": 10.0,  # degrees, Gaussian half-width
        "relax_days": 0.5,  # relaxation of the m = 0 part toward the jets
        "drag_days": 10.0,  # linear drag on vorticity and divergence
        "orography": True,
        "spinup_days": 30.0,
        "init_days": 10.0,  # run from a nudged spun-up state to a new initial state
        "clim_members": 32,  # parallel trajectories of the climatology run
        "clim_spacing": 2,  # cycles between samples of one trajectory (12 h: lag correlation ~0.8)
    }
    variables = ("h", "u", "v")
    units = ("m", "m s-1", "m s-1")
    # h is the free-surface geopotential divided by g: a geopotential height in CF's sense.
    standard_names = ("geopotential_height", "eastward_wind", "northward_wind")
    cycle_length = 6.0
    time_units = "hours"
    location_names = ("lat", "lon")  # the columns of point_coords
    location_units = ("radian", "radian")
    # About 10 % of each channel's climatological std, rounded: the std over 500 default 32x64
    # climatology samples at each point, area-weighted RMS over the grid, was h 347 m,
    # u 21.2 m/s, v 21.0 m/s (benchmarks/sw_chaos.py).
    default_obs_std = (35.0, 2.0, 2.0)

    def __init__(self, **options):
        super().__init__()
        self.options = resolve(self.defaults, options, "model 'sw'")
        o = self.options
        if o["resolution"] not in RESOLUTIONS:
            raise UsageError(f"option 'resolution' of model 'sw' must be one of {', '.join(RESOLUTIONS)}, got '{o['resolution']}'")
        if o["precision"] not in ("float32", "float64"):
            raise UsageError(f"option 'precision' of model 'sw' must be float32 or float64, got '{o['precision']}'")
        for key in ("mean_depth", "relax_days", "drag_days", "jet_width"):
            if not o[key] > 0:
                raise UsageError(f"option '{key}' of model 'sw' must be positive, got {o[key]}")
        if o["clim_members"] < 1 or o["clim_spacing"] < 1 or o["spinup_days"] < 0 or o["init_days"] < 0:
            raise UsageError("options clim_members and clim_spacing of model 'sw' must be >= 1, "
                             "spinup_days and init_days >= 0")
        nlat, nlon, lmax, dt, hyper = RESOLUTIONS[o["resolution"]]
        self.state_shape = (3, nlat, nlon)
        self.steps_per_cycle = round(self.cycle_length * 3600 / dt)
        self.dyn = Dynamics(nlat, nlon, lmax, dt, hyper, o["mean_depth"], o["jet_speed"], o["jet_lat"],
                            o["jet_width"], o["relax_days"], o["drag_days"], o["orography"],
                            getattr(torch, o["precision"]))
        self.lat, self.lon = self.dyn.lat, self.dyn.lon

    # --- dynamics ------------------------------------------------------------------------
    def forecast(self, ensemble, generator=None):
        spec = self.dyn.integrate(self.dyn.to_spectral(ensemble), self.steps_per_cycle)
        return self.dyn.to_grid(spec).to(ensemble.dtype)

    def run_days(self, spec: torch.Tensor, days: float, label: str | None = None) -> torch.Tensor:
        """Integrate a spectral state for whole cycles covering ``days``; with a ``label``, under
        a progress bar (when the harness's ``progress`` flag is on)."""
        steps = round(days * 24 / self.cycle_length) * self.steps_per_cycle
        if label is None:
            return self.dyn.integrate(spec, steps)
        with cache.progress_bar(steps, f"sw: {label}", self.progress) as bar:
            return self.dyn.integrate(spec, steps, tick=lambda: bar.update(1))

    def spun_up(self, n: int, seed: int) -> torch.Tensor:
        """``n`` spectral states: balanced jets plus 10 m height noise, after the spin-up."""
        gen = torch.Generator().manual_seed(seed)
        spec = self.dyn.equilibrium.expand(n, -1, -1, -1).clone()
        spec[:, 2] += _random_height_noise(self.dyn, n, 10.0, gen)
        days = self.options["spinup_days"]
        return self.run_days(spec, days, f"spin-up of {n} states ({days:g} days)")

    def initial_states(self, n, generator):
        """Random members of a cached spun-up set (its own seed, never the climatology's),
        each nudged by 50 m of height noise drawn from ``generator`` and run on ``init_days``
        (10), long enough for the nudges to grow to climatological size (doubling ~2 days)."""
        base = self._cached_states("spinup", SPINUP_MEMBERS, self._make_spinup)
        pick = torch.cat([torch.randperm(len(base), generator=generator) for _ in range(-(-n // len(base)))])[:n]
        spec = self.dyn.to_spectral(base[pick])
        spec[:, 2] += _random_height_noise(self.dyn, n, 50.0, generator)
        days = self.options["init_days"]
        label = f"{n} initial state{'s' if n > 1 else ''} ({days:g} days)"
        return self.dyn.to_grid(self.run_days(spec, days, label)).to(torch.float64)

    def climatology(self, n):
        """The first ``n`` samples of a cached climatology run (time-major over its parallel
        trajectories, so a few samples already span many trajectories), extended and
        re-cached when more are asked for."""
        return self._climatology_pool(int(n))[:n].clone()

    # --- geometry -----------------------------------------------------------------------
    def point_coords(self):
        lat = self.lat[:, None].expand(self.state_shape[1:])
        lon = self.lon[None, :].expand(self.state_shape[1:])
        return torch.stack([lat.reshape(-1), lon.reshape(-1)], 1)

    def interpolation(self, coords):
        """Indices and weights (m, 4) of bilinear interpolation to off-grid (lat, lon) sites."""
        return sphere.bilinear(self.lat, self.lon, coords)

    def distance(self, a, b):
        """Great-circle distance in km."""
        return sphere.great_circle(a, b)

    @classmethod
    def default_burn_in(cls, cycles: int) -> int:
        """Half the run, up to 100 cycles: from a climatological start the sphere's filters
        take tens of cycles to reach their plateau (the LETKF is still falling at cycle 50, 3D-Var
        and LO-SDA near 100; issue 13's table), so a tenth would score the spin-up."""
        return max(cycles // 10, min(cycles // 2, 100))

    def default_length_scale(self):
        """km: the localisation length L = c / sqrt(10/3) for a Gaspari-Cohn half-width
        c = 2000 km (weight 0.21 at c, zero at 2c; see Model.default_length_scale). Climatological
        anomaly correlations (benchmarks/results/sw_chaos*.md) fall to 0.5 near 1700 km and
        to zero near 3900 km for h, near 1100 and 2200 km for the winds; c = 2000 km keeps
        the positively correlated neighbourhood of both and cuts a 20-member ensemble's
        sampling noise (~0.2) beyond it."""
        return 2000.0 / math.sqrt(10.0 / 3.0)

    def area_weights(self):
        w = sphere.quadrature_weights(len(self.lat))
        return w[:, None].expand(self.state_shape[1:]).clone()

    def contains(self, coords):
        lat = coords[:, 0]
        return torch.isfinite(coords).all(1) & (lat.abs() <= math.pi / 2)

    def grid_coords(self):
        return {
            "lat": ("lat", torch.rad2deg(self.lat).tolist(), {"units": "degrees_north", "standard_name": "latitude", "long_name": "Gauss-Legendre latitude"}),
            "lon": ("lon", torch.rad2deg(self.lon).tolist(), {"units": "degrees_east", "standard_name": "longitude"}),
        }

    def static_covariance(self, anomalies, scale=1.0):
        x = anomalies.reshape(anomalies.shape[0], *self.state_shape)
        return sphere.estimate_covariance(x, self.dyn.lmax, scale)

    # --- caching ------------------------------------------------------------------------
    # Files are named by the settings (so a code edit overwrites its entry rather than leaving
    # 100-400 MB behind per edit) and record the version of the code that made them, checked
    # on every read. Building happens once under a file lock (interfaces/cache.py).
    def cache_key(self) -> str:
        payload = json.dumps({"options": self.options, "version": CACHE_FORMAT}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]

    @staticmethod
    def cache_version() -> str:
        return cache.code_version(CACHE_SOURCES, libraries=CACHE_LIBRARIES)

    def cache_path(self, kind: str) -> Path:
        return self.cache_root() / f"sw-{self.options['resolution']}-{self.cache_key()}-{kind}.nc"

    def _cached_states(self, kind, minimum, make):
        """Cached states, or ``make()``'s (states, continuation or None) when absent, made by
        other code, corrupt or too short."""
        what = f"the sw {self.options['resolution']} {kind} states"
        found = cache.build_once(self.cache_path(kind), lambda p: self._read(p, minimum), make,
                                 lambda data, tmp: self._dataset(*data).to_netcdf(tmp), what)
        return found[0]

    def _make_spinup(self):
        states = self.dyn.to_grid(self.spun_up(SPINUP_MEMBERS, SPINUP_SEED)).to(torch.float64)
        return states, None

    def _climatology_pool(self, n: int) -> torch.Tensor:
        return self._cached_states("clim", n, lambda: self._extend_climatology(n))

    def _extend_climatology(self, n: int):
        """At least ``n`` climatology states: the valid cached run continued from its stored
        continuation state, or a new run from the spin-up."""
        o = self.options
        members = int(o["clim_members"])
        found, _ = self._read(self.cache_path("clim"))
        if found is not None and found[1] is not None and len(found[1]) == members:
            pool, last = [found[0]], self.dyn.to_spectral(found[1])
        else:
            pool, last = [], self.spun_up(members, CLIM_SEED)
        have = sum(len(p) for p in pool)
        steps = int(o["clim_spacing"]) * self.steps_per_cycle
        with cache.progress_bar(n, f"sw: climatology run ({members} trajectories)", self.progress, "state") as bar:
            bar.update(min(have, n))
            while have < n:
                last = self.dyn.integrate(last, steps)
                pool.append(self.dyn.to_grid(last).to(torch.float64))
                have += members
                bar.update(min(members, n - bar.n))
        return torch.cat(pool), self.dyn.to_grid(last).to(torch.float64)

    def _dataset(self, states, last):
        import xarray as xr

        coords = {name: (dim, values, attrs) for name, (dim, values, attrs) in self.grid_coords().items()}
        data = {}
        for c, var in enumerate(self.variables):
            attrs = {"units": self.units[c], "standard_name": self.standard_names[c]}
            data[var] = (("sample", "lat", "lon"), states[:, c].numpy(), attrs)
            if last is not None:
                data[f"last_{var}"] = (("member", "lat", "lon"), last[:, c].numpy(),
                                       {"units": self.units[c], "long_name": f"continuation state of the run, {var}"})
        attrs = {"model": self.summary(), "cache_key": self.cache_key(), "Conventions": "CF-1.8",
                 "code_version": self.cache_version(), "code_sources": ", ".join(CACHE_SOURCES)}
        return xr.Dataset(data, coords=coords, attrs=attrs)

    def _read(self, path: Path, minimum: int = 0):
        """((states, continuation or None), "") from a valid cache file, else (None, why not)."""
        import xarray as xr

        if not path.exists():
            return None, "missing"
        try:
            with xr.open_dataset(path) as ds:
                ds = ds.load()
            made_by = ds.attrs.get("code_version")
            if made_by != self.cache_version():
                return None, (f"made by other code (version {made_by or 'not recorded'}, this code is "
                              f"{self.cache_version()}: {', '.join(CACHE_SOURCES)} or the torch libraries changed)")
            if ds.attrs.get("cache_key") != self.cache_key():
                return None, f"for other settings (its key is {ds.attrs.get('cache_key')})"
            states = torch.stack([torch.from_numpy(ds[v].values) for v in self.variables], 1).to(torch.float64)
            last = None
            if all(f"last_{v}" in ds for v in self.variables):
                last = torch.stack([torch.from_numpy(ds[f"last_{v}"].values) for v in self.variables], 1).to(torch.float64)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is regenerated
            return None, f"corrupt ({type(exc).__name__})"
        if states.shape[1:] != self.state_shape or not torch.isfinite(states).all():
            return None, f"corrupt (shape {tuple(states.shape[1:])} or non-finite values)"
        if len(states) < minimum:
            return None, f"too short ({len(states)} states, {minimum} asked for); extending it"
        return (states, last), ""


SPINUP_MEMBERS = 16


def stations(arg: str, model, generator) -> PointSet:
    """Observation kind 'stations:N': N sites uniform on the sphere, bilinear interpolation."""
    n = positive_int("stations", arg, "count")
    if not hasattr(model, "interpolation") or tuple(model.location_names) != ("lat", "lon"):
        raise UsageError(f"observation kind 'stations' needs a model on the sphere, not '{model.name}'")
    coords = sphere.random_sphere_points(n, generator)
    index, weight = model.interpolation(coords)
    return PointSet(index, weight, coords)
