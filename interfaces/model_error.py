"""Stochastic model error of the truth run (``--model-error SPEC``): the imperfect-model twin.

The truth is x_{k+1} = M_truth(x_k) + eta_k, where eta_k is drawn once per cycle after the
truth model's forecast; the forecast model that methods cycle never adds it. The draws come
from a stream of their own derived from the experiment's seed (the harness's "truth-model-error"
stream), so a run is reproducible, and the truth's initial state and model noise are those of
the perfect-model truth of the same seed: only the forcing differs.

Spec grammar (sizes are per cycle, in the variable's units):

* ``none`` (or empty): no model error.
* ``additive:S`` or ``additive:VAR=S,VAR=S``: independent Gaussian noise of std S on every
  state value (any model; variables named as in ``da-harness models``), e.g. ``additive:0.1``
  on Lorenz-96.
* ``spectral:h=H,vort=V,div=D,lmax=L`` (any subset of h, vort, div; models on the sphere with
  a spectral core, i.e. ``sw``): random increments of height (m), relative vorticity and
  divergence (s-1). Spectrum: every spherical-harmonic coefficient with total wavenumber
  1 <= l <= L (default 10; l = 0 is left out, so mass and the global mean are unchanged) and
  0 <= m <= l gets an independent complex Gaussian of equal variance (white in (l, m), so the
  variance per total wavenumber grows like 2l + 1), and each draw is scaled so that its
  area-weighted RMS over the sphere equals the given size exactly. Vorticity and divergence
  increments enter the state through the winds they induce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .errors import UsageError

KINDS = {
    "none": "no model error (the default)",
    "additive": "Gaussian noise on every state value per cycle: additive:S or additive:VAR=S,...",
    "spectral": "random spherical-harmonic increments per cycle on the sphere: spectral:h=M,vort=S-1,div=S-1,lmax=L",
}
#: Largest total wavenumber of spectral increments unless ``lmax`` is given: synoptic and larger
#: scales (the 32x64 grid resolves l <= 21), where missing physics acts in a forecast model.
DEFAULT_LMAX = 10
#: Spectral channel of each field in the sw model's spectral state (vorticity, divergence, height).
SPECTRAL_FIELDS = {"vort": 0, "div": 1, "h": 2}
HELP = ("stochastic forcing added to the truth run only, per cycle: none, additive:S (or additive:VAR=S,...), "
        "spectral:h=M,vort=S-1,div=S-1,lmax=L on the sphere (white in (l, m) for 1 <= l <= L, default L=10, "
        "each draw scaled to the given area-weighted RMS)")


@dataclass
class ModelError:
    """A parsed ``--model-error`` spec for one model; ``perturb`` adds one cycle's forcing."""

    spec: str
    kind: str
    sizes: dict[str, float] = field(default_factory=dict)
    lmax: int = DEFAULT_LMAX

    def perturb(self, states: torch.Tensor, model, generator: torch.Generator) -> torch.Tensor:
        """``states`` (n, *state_shape) plus one draw of the forcing per state."""
        if self.kind == "additive":
            std = torch.tensor([self.sizes[v] for v in model.variables], dtype=torch.float64)
            std = std.reshape(-1, *[1] * (len(model.state_shape) - 1)) if model.has_channels else std[0]
            noise = torch.randn(states.shape, generator=generator, dtype=torch.float64)
            return states + (noise * std).to(states.dtype)
        return states + spectral_increment(model, self.sizes, self.lmax, states.shape[0], generator).to(states.dtype)


def parse(spec: str | None, model) -> ModelError | None:
    """A ``--model-error`` spec checked against ``model``; None for no model error."""
    text = (spec or "").strip()
    if text in ("", "none"):
        return None
    kind, _, arg = text.partition(":")
    kind = kind.strip()
    if kind not in KINDS or kind == "none":
        raise UsageError(f"unknown --model-error kind '{kind}' in '{text}'; valid kinds: {', '.join(KINDS)}")
    if kind == "additive":
        return ModelError(text, kind, _additive_sizes(text, arg, model))
    return _spectral(text, arg, model)


def _number(text: str, spec: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise UsageError(f"--model-error '{spec}': {what} must be a finite number >= 0, got '{text.strip()}'")
    return value


def _additive_sizes(spec: str, arg: str, model) -> dict[str, float]:
    if not arg.strip():
        raise UsageError(f"--model-error '{spec}' needs a std: additive:S or additive:VAR=S,...")
    if "=" not in arg:
        size = _number(arg, spec, "the std")
        return {v: size for v in model.variables}
    sizes = {v: 0.0 for v in model.variables}
    for part in arg.split(","):
        var, _, value = part.partition("=")
        var = var.strip()
        if var not in model.variables:
            raise UsageError(f"--model-error '{spec}' names unknown variable '{var}' of model '{model.name}'; "
                             f"valid variables: {', '.join(model.variables)}")
        sizes[var] = _number(value, spec, f"the std of '{var}'")
    return sizes


def _spectral(spec: str, arg: str, model) -> ModelError:
    dyn = getattr(model, "dyn", None)
    if not all(hasattr(dyn, a) for a in ("isht", "to_grid", "lmax")):
        raise UsageError(f"--model-error '{spec}': spectral forcing needs a spectral model on the sphere (sw), "
                         f"not '{model.name}'; use additive:S")
    sizes: dict[str, float] = {}
    lmax = DEFAULT_LMAX
    for part in (p for p in arg.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep:
            raise UsageError(f"--model-error '{spec}': '{part.strip()}' is not KEY=VALUE; "
                             f"keys: {', '.join(SPECTRAL_FIELDS)}, lmax")
        if key == "lmax":
            try:
                lmax = int(value)
            except ValueError:
                lmax = 0
            if not 1 <= lmax < dyn.lmax:
                raise UsageError(f"--model-error '{spec}': lmax must be an integer in [1, {dyn.lmax - 1}] "
                                 f"(the model's truncation), got '{value.strip()}'")
        elif key in SPECTRAL_FIELDS:
            sizes[key] = _number(value, spec, f"the RMS of '{key}'")
        else:
            raise UsageError(f"--model-error '{spec}': unknown key '{key}'; keys: {', '.join(SPECTRAL_FIELDS)}, lmax")
    if not sizes:
        raise UsageError(f"--model-error '{spec}' gives no size; e.g. spectral:h=20,vort=1e-6")
    return ModelError(spec, "spectral", sizes, lmax)


def spectral_increment(model, sizes: dict[str, float], lmax: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """Grid increments (n, *state_shape) of the fields in ``sizes`` (see the module's docstring)."""
    dyn = model.dyn
    L = dyn.lmax
    l = torch.arange(L)[:, None]
    m = torch.arange(L)[None, :]
    mask = ((l >= 1) & (l <= lmax) & (m <= l)).to(torch.float64)
    weights = model.area_weights().to(torch.float64)
    spec = torch.zeros(n, 3, L, L, dtype=torch.complex128)
    for name in sorted(sizes):  # a fixed order of draws, whatever the spec's order
        if sizes[name] == 0:
            continue
        re = torch.randn(n, L, L, generator=generator, dtype=torch.float64)
        im = torch.randn(n, L, L, generator=generator, dtype=torch.float64)
        coeffs = torch.complex(re * mask, im * mask)
        grid = dyn.isht(coeffs.to(_complex(dyn.dtype))).to(torch.float64)
        rms = (grid.pow(2) * weights).mean(dim=(1, 2)).sqrt()
        spec[:, SPECTRAL_FIELDS[name]] = coeffs * (sizes[name] / rms)[:, None, None]
    return dyn.to_grid(spec.to(_complex(dyn.dtype))).to(torch.float64)


def _complex(dtype: torch.dtype) -> torch.dtype:
    return torch.complex64 if dtype == torch.float32 else torch.complex128


def truth_run(model, cycles: int, generator: torch.Generator, error: ModelError | None,
              error_generator: torch.Generator | None = None) -> torch.Tensor:
    """The truth trajectory (cycles + 1 states) of ``model`` with ``error`` added after each
    forecast; without an error, exactly ``model.truth_run``."""
    if error is None:
        return model.truth_run(cycles, generator)
    x = model.initial_states(1, generator)
    states = [x[0]]
    for _ in range(cycles):
        x = error.perturb(model.forecast(x, generator), model, error_generator)
        states.append(x[0])
    return torch.stack(states)


def add_truth_args(p) -> None:
    """The imperfect-model twin's command-line options (run, compare, tune), defined here so the
    commands share them without importing one another."""
    p.add_argument("--truth-set", dest="truth_options", action="append", default=[], metavar="KEY=VALUE",
                   help="a model option of the truth run only (repeatable), e.g. jet_speed=70: the forecast "
                        "model and the methods keep the default (or --set model.KEY) model and never see it")
    p.add_argument("--model-error", default=None, metavar="SPEC", help=HELP)
    p.add_argument("--forecast-bias", default=None, metavar="KEY=VALUE;...",
                   help="correct every cycled forecast by the forecast model's mean one-cycle error on the "
                        "climatology of the model with these options (the analogue of reanalysis data, e.g. "
                        "'jet_speed=70;drag_days=7'; interfaces/forecast_bias.py); off by default")
