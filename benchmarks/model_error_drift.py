"""How far an imperfect-model truth drifts from the forecast model in one cycle: the size of the
model error per cycle that `--truth-set` physics changes make, so that `--model-error spectral:`
forcing of a comparable size can be chosen (benchmarks/suites/regimes.toml).

For truth states x_k of the truth model (`--truth-set` options), the one-cycle model error is
d_k = M_truth(x_k) - M_forecast(x_k); this prints its area-weighted RMS in h (m), u and v (m/s)
and in relative vorticity (s-1), and the share of it in total wavenumbers 1..10, beside the
observation-error std and the climatological std. Run:

    DA_HARNESS_THREADS=1 .venv/bin/python benchmarks/model_error_drift.py --truth-set jet_speed=70 \
        --truth-set drag_days=7 --cycles 40
"""

from __future__ import annotations

import argparse
import json

import torch

from interfaces.harness import Experiment, _truth_model, build_model, default_cache
from interfaces.model_error import truth_run
from interfaces.options import parse_assignments
from interfaces.registry import get_registry


def field_rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Area-weighted RMS over the grid, per leading index: (n, nlat, nlon) -> (n,)."""
    return (x.pow(2) * w).mean(dim=(-2, -1)).sqrt()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--truth-set", action="append", default=[])
    p.add_argument("--model-error", default=None)
    p.add_argument("--cycles", type=int, default=40)
    p.add_argument("--seed", type=int, default=1000)
    args = p.parse_args()
    torch.set_num_threads(1)
    registry = get_registry()
    forecast = build_model(registry, "sw", {}, default_cache())
    exp = Experiment(model="sw", truth_options=parse_assignments(args.truth_set), model_error=args.model_error)
    truth_model, error = _truth_model(exp, registry, forecast, default_cache())
    gen, err_gen = torch.Generator().manual_seed(args.seed), torch.Generator().manual_seed(args.seed + 1)
    x = truth_run(truth_model, args.cycles, gen, error, err_gen)  # (cycles + 1, 3, nlat, nlon)
    w = forecast.area_weights()
    d = x[1:] - forecast.forecast(x[:-1])
    dyn = forecast.dyn
    spec = dyn.to_spectral(d)
    vort = dyn.isht(spec[:, 0]).to(torch.float64)
    power = spec.abs().pow(2).sum(-1)  # (n, 3, l): per total wavenumber
    large = (power[:, :, 1:11].sum(-1) / power[:, :, 1:].sum(-1)).mean(0)
    clim = forecast.climatology(500)
    out = {
        "truth_options": exp.truth_options, "model_error": args.model_error, "cycles": args.cycles,
        "one_cycle_model_error_rms": {v: float(field_rms(d[:, c], w).mean()) for c, v in enumerate(forecast.variables)},
        "one_cycle_model_error_rms_vort": float(field_rms(vort, w).mean()),
        "share_of_variance_in_l_1_10": {k: float(large[c]) for c, k in enumerate(("vort", "div", "h"))},
        "obs_std": dict(zip(forecast.variables, forecast.default_obs_std)),
        "climatological_std": {v: float(field_rms(clim[:, c] - clim[:, c].mean(0), w).mean())
                               for c, v in enumerate(forecast.variables)},
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
