"""A multivariate, balanced static B for 3D-Var on the sphere (`--set b_source=balanced`).

The univariate B of ``static_b`` treats height and the two wind components as independent
fields with white-noise-grown correlations; it needs a x128 fudge on the sphere. This one is
built the way a variational system builds its B (Parrish & Derber 1992; Derber & Bouttier 1999):

- control variables: streamfunction psi, velocity potential chi and unbalanced height h_u,
  each as spectral coefficients with a variance per total wavenumber l (isotropic,
  homogeneous correlations; one number per l and variable);
- balance: the height increment is h = h_u + beta(lat) f psi / g, a latitude-dependent
  statistical regression on the geostrophic height of psi (beta ~ 1 in mid-latitudes where
  the flow is geostrophic, and f -> 0 removes it at the equator);
- winds from psi and chi through the model's own vector transforms, so wind increments are
  non-divergent / irrotational exactly as the model defines them.

B = S S^T with S: v -> (h, u, v) linear; S^T comes from autograd (the default of
``BackgroundCovariance``), so it is the exact adjoint (tests/test_balanced_b.py checks the
dot-product identity).

The statistics (variances per l, beta per latitude) are estimated from background errors of a
held-out cycled 3D-Var run: its own truth (a fixed seed no experiment uses), its own network
drawn like the experiment's (same spec and error std, a fixed seed), bootstrapped from the
univariate B and iterated once with the balanced B. They depend on the model configuration and
the observation spec only, never on the scored seed, and are cached (see ``cache_path``).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Callable

import torch

from interfaces.covariance import BackgroundCovariance
from interfaces.errors import UsageError

#: Bump when the estimation below changes, so cached statistics are rebuilt.
FORMAT_VERSION = 1
#: Seeds of the held-out truth and network: fixed, and not the output of the harness's
#: per-experiment streams (which hash the experiment seed), so no scored run shares them.
HELD_OUT_TRUTH_SEED, HELD_OUT_NETWORK_SEED, HELD_OUT_NOISE_SEED = 880_001, 880_002, 880_003
GRAVITY = 9.80616


class BalancedCovariance(BackgroundCovariance):
    """S v = (h_u + beta f psi / g, u(psi, chi), v(psi, chi)) on the model grid.

    ``amplitude`` (3, lmax): the std of each spectral coefficient of psi, chi, h_u per total
    wavenumber l; ``beta`` (nlat,): the balance regression per latitude row."""

    def __init__(self, dyn, amplitude: torch.Tensor, beta: torch.Tensor, scale: float = 1.0):
        self.dyn = dyn
        self.lmax = dyn.lmax
        self.nlat, self.nlon = dyn.nlat, dyn.nlon
        self.amplitude = amplitude.to(torch.float64) * math.sqrt(scale)
        self.beta = beta.to(torch.float64)
        l = torch.arange(self.lmax)
        m = torch.arange(self.lmax)
        self.mask_re = m[None, :] <= l[:, None]
        self.mask_im = self.mask_re & (m[None, :] > 0)
        self.n_real = int(self.mask_re.sum())
        self.per_var = self.n_real + int(self.mask_im.sum())  # = lmax**2 real coefficients
        self.n_ctrl = 3 * self.per_var
        # m > 0 coefficients are split over two real parts: 1/sqrt(2) each keeps E|c|^2.
        split = torch.where(m > 0, 1 / math.sqrt(2), 1.0).to(torch.float64)
        self.coeff_std = self.amplitude[:, :, None] * split[None, None, :]  # (3, l, m)
        self.f_over_g = (dyn.coriolis[:, 0].to(torch.float64) / GRAVITY)  # (nlat,)
        ll = torch.arange(self.lmax, dtype=torch.float64)
        self.ll = (ll * (ll + 1))[:, None]  # l(l+1), broadcast over m

    def _coeffs(self, v: torch.Tensor) -> torch.Tensor:
        v = v.reshape(v.shape[0], 3, self.per_var)
        re = v.new_zeros(v.shape[0], 3, self.lmax, self.lmax)
        im = torch.zeros_like(re)
        re[:, :, self.mask_re] = v[:, :, : self.n_real]
        im[:, :, self.mask_im] = v[:, :, self.n_real:]
        return torch.complex(re, im) * self.coeff_std

    def sqrt(self, v: torch.Tensor) -> torch.Tensor:
        dtype = v.dtype
        c = self._coeffs(v.to(torch.float64))  # (batch, 3, l, m): psi, chi, h_u
        radius = _radius()
        # psi = -a^2 vort / l(l+1)  =>  vort = -l(l+1) psi / a^2 (likewise div from chi).
        vort = -self.ll * c[:, 0] / radius**2
        div = -self.ll * c[:, 1] / radius**2
        spec = torch.stack([vort, div, c[:, 2]], 1)
        uv = _winds(self.dyn, spec)  # (batch, 2, nlat, nlon)
        psi = _isht(self.dyn, c[:, 0])
        h = _isht(self.dyn, c[:, 2]) + (self.beta * self.f_over_g)[:, None] * psi
        return torch.cat([h[:, None], uv], 1).reshape(v.shape[0], -1).to(dtype)


def _radius() -> float:
    from interfaces.models.sw import RADIUS

    return RADIUS


def _isht(dyn, coeffs: torch.Tensor) -> torch.Tensor:
    """Inverse transform in float64 whatever the model's own precision."""
    return _transforms(dyn)["isht"](coeffs)


def _winds(dyn, spec: torch.Tensor) -> torch.Tensor:
    """Grid (u, v) from spectral vorticity and divergence, in float64 (as Dynamics.winds)."""
    t = _transforms(dyn)
    st = torch.stack([-spec[:, 1], spec[:, 0]], 1) * (_radius() * t["inv_ll"])
    vt = t["ivsht"](st)
    return torch.stack([vt[:, 1], -vt[:, 0]], 1)


def _vort_div(dyn, uv: torch.Tensor) -> torch.Tensor:
    t = _transforms(dyn)
    st = t["vsht"](torch.stack([-uv[:, 1], uv[:, 0]], 1))
    return torch.stack([st[:, 1], -st[:, 0]], 1) * (t["ll"] / _radius())


_TRANSFORMS: dict[int, dict] = {}


def _transforms(dyn) -> dict:
    """float64 copies of the model's transforms (the model may integrate in float32)."""
    import torch_harmonics as th

    from interfaces.models import sphere

    key = id(dyn)
    if key not in _TRANSFORMS:
        kw = dict(lmax=dyn.lmax, mmax=dyn.lmax, grid=sphere.GRID)
        l = torch.arange(dyn.lmax, dtype=torch.float64)[:, None]
        ll = l * (l + 1)
        _TRANSFORMS[key] = {
            "sht": th.RealSHT(dyn.nlat, dyn.nlon, **kw).double(),
            "isht": th.InverseRealSHT(dyn.nlat, dyn.nlon, **kw).double(),
            "vsht": th.RealVectorSHT(dyn.nlat, dyn.nlon, **kw).double(),
            "ivsht": th.InverseRealVectorSHT(dyn.nlat, dyn.nlon, **kw).double(),
            "ll": ll, "inv_ll": torch.where(ll > 0, 1 / ll.clamp_min(1), 0.0),
        }
    return _TRANSFORMS[key]


# --- estimation ---------------------------------------------------------------------------

def fit(dyn, errors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Amplitudes (3, lmax) and balance regression beta (nlat,) from error samples
    (n, 3, nlat, nlon) with channels h, u, v."""
    e = errors.to(torch.float64)
    e = e - e.mean(0)
    t = _transforms(dyn)
    radius = _radius()
    vd = _vort_div(dyn, e[:, 1:])  # (n, 2, l, m)
    inv = -(radius**2) * t["inv_ll"]
    psi_c, chi_c = vd[:, 0] * inv, vd[:, 1] * inv
    psi = t["isht"](psi_c)
    f_over_g = dyn.coriolis[:, 0].to(torch.float64) / GRAVITY
    regressor = f_over_g[:, None] * psi  # geostrophic height of psi, (n, nlat, nlon)
    h = e[:, 0]
    # Least squares per latitude row, over samples and longitudes.
    beta = (h * regressor).sum((0, 2)) / (regressor.pow(2).sum((0, 2)) + 1e-300)
    beta = torch.where(regressor.pow(2).sum((0, 2)) > 0, beta, torch.zeros_like(beta))
    h_u = t["sht"](h - beta[:, None] * regressor)
    amplitude = torch.stack([_per_l_std(psi_c), _per_l_std(chi_c), _per_l_std(h_u)])
    amplitude[:2, 0] = 0.0  # psi and chi at l = 0 carry no wind
    return amplitude, beta


def _per_l_std(c: torch.Tensor) -> torch.Tensor:
    """sqrt(E|c_lm|^2) per l, pooled over m (m > 0 twice: the -m partner) and samples."""
    power = c.abs() ** 2
    power[..., 1:] *= 2
    l = torch.arange(c.shape[-2], dtype=torch.float64)
    return (power.sum(-1).mean(0) / (2 * l + 1)).sqrt()


def held_out_network(model, operator, build_operator: Callable | None):
    """The experiment's network drawn afresh with a fixed seed (same spec and error std per
    variable), so B does not depend on the scored seed's observation locations; a network read
    from a file (not seed-dependent) is used as it is."""
    if build_operator is None or operator.spec.startswith("file:"):
        return operator
    try:
        op = build_operator(operator.spec, model, torch.Generator().manual_seed(HELD_OUT_NETWORK_SEED))
    except UsageError:
        return operator
    std = op.std.clone()
    for c in op.channels.unique().tolist():
        mine = operator.std[operator.channels == c]
        if mine.numel():
            std[op.channels == c] = mine[0]
    op.std = std
    return op


def cycled_errors(model, operator, covariance, analyse: Callable, truth: torch.Tensor, x0: torch.Tensor,
                  burn_in: int, progress: bool = False, label: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """Background errors x_b - x_t of a held-out cycled 3D-Var run along ``truth`` (its first
    state is the initial time) from the analysis ``x0`` (1, *state), for the cycles after
    ``burn_in``; and the last analysis, to continue from."""
    noise_gen = torch.Generator().manual_seed(HELD_OUT_NOISE_SEED + len(label))
    x = x0.clone().to(torch.float64)
    errors = []
    bar = _bar(len(truth) - 1, label, progress)
    for k in range(len(truth) - 1):
        xb = model.forecast(x).to(torch.float64)
        y = operator(truth[k + 1:k + 2])[0] + operator.std * torch.randn(operator.n_obs, generator=noise_gen, dtype=torch.float64)
        x = analyse(covariance, xb, y, operator)
        if k >= burn_in:
            errors.append(xb[0] - truth[k + 1])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return torch.stack(errors), x


def _bar(total: int, label: str, progress: bool):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit="cycle", file=sys.stderr, leave=False)


def cache_path(cache_dir: Path, model, operator_spec: str, std: torch.Tensor, settings: dict) -> Path:
    """Named by what defines the statistics (model configuration, network spec and error std,
    the held-out run's length); the code that made them is checked on read (``_read``)."""
    payload = json.dumps({"model": model.summary(), "spec": operator_spec,
                          "std": [round(float(s), 9) for s in std.unique().tolist()],
                          "settings": settings, "version": FORMAT_VERSION}, sort_keys=True)
    key = hashlib.sha1(payload.encode()).hexdigest()[:12]
    return Path(cache_dir) / f"balanced-b-{model.name}-{key}.pt"


def producing_code(model) -> str:
    """The version of the code the statistics depend on: this module, 3D-Var's analysis that
    the held-out run uses, and the model's dynamics."""
    from interfaces.cache import code_version

    return code_version(["baselines.balanced_b", "baselines.var3d", type(model).__module__],
                        follow=["baselines", "interfaces"], libraries=["torch", "torch-harmonics"])


def estimate(model, context, analyse: Callable, bootstrap: Callable[[], BackgroundCovariance], scale: float = 1.0,
             cycles: int = 80, burn_in: int = 30, build_operator: Callable | None = None) -> BalancedCovariance:
    """The balanced B for ``model`` and the context's observation spec, from the cache or
    estimated from one held-out cycled run in two legs of ``cycles``: the first with
    ``bootstrap()``'s B, the second (continuing from the first) with the first leg's estimate;
    the second leg's errors after ``burn_in`` give the statistics."""
    dyn = getattr(model, "dyn", None)
    if dyn is None or not hasattr(dyn, "coriolis"):
        raise UsageError(f"b_source 'balanced' needs the shallow-water sphere (model 'sw'), not model '{model.name}'")
    op = held_out_network(model, context.operator, build_operator)
    settings = {"cycles": cycles, "burn_in": burn_in}
    path = cache_path(context.cache_dir, model, op.spec, op.std, settings)
    version = producing_code(model)

    def build():
        print(f"3dvar: estimating the balanced B from a held-out cycled run (2 x {cycles} cycles)", file=sys.stderr)
        truth = model.truth_run(2 * cycles, torch.Generator().manual_seed(HELD_OUT_TRUTH_SEED)).to(torch.float64)
        x0 = context.climatology[:1]
        first, x = cycled_errors(model, op, bootstrap(), analyse, truth[: cycles + 1], x0, burn_in,
                                 context.progress, "balanced B, leg 1")
        amp, beta = fit(dyn, first)
        second, _ = cycled_errors(model, op, BalancedCovariance(dyn, amp, beta), analyse, truth[cycles:], x,
                                  burn_in, context.progress, "balanced B, leg 2")
        amp, beta = fit(dyn, second)
        stats = {"amplitude": amp, "beta": beta, "samples": len(second), "code_version": version,
                 "background_rms": [float(v) for v in second.pow(2).mean((0, 2, 3)).sqrt()],
                 "leg1_background_rms": [float(v) for v in first.pow(2).mean((0, 2, 3)).sqrt()]}
        print(f"3dvar: balanced B from {len(second)} background errors; their RMS h, u, v: "
              + ", ".join(f"{v:.3g}" for v in stats["background_rms"]), file=sys.stderr)
        return stats

    from interfaces.cache import build_once

    stats = build_once(path, lambda p: _read(p, version), build, lambda value, tmp: torch.save(value, tmp),
                       f"the balanced B of {model.name} for '{op.spec}'")
    return BalancedCovariance(dyn, stats["amplitude"], stats["beta"], scale)


def _read(path: Path, version: str):
    """(statistics, "") from a valid cache file, else (None, why it is not usable)."""
    if not path.exists():
        return None, "missing"
    try:
        stats = torch.load(path, weights_only=True)
        if not (torch.isfinite(stats["amplitude"]).all() and torch.isfinite(stats["beta"]).all()):
            return None, "corrupt (non-finite statistics)"
    except Exception as exc:  # noqa: BLE001 - an unreadable cache is rebuilt, and said so
        return None, f"corrupt ({type(exc).__name__})"
    if stats.get("code_version") != version:
        return None, f"made by other code ({stats.get('code_version')}, now {version})"
    return stats, ""
