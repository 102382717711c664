"""Per-cycle records of a run and its summary scores, with how each is aggregated over time.

The harness fills a Recorder cycle by cycle; ``summarise`` turns the cycles after burn-in into
the summary figures; ``AGGREGATION`` says, per figure, how (it goes into the run file's
attributes). Definitions of the scores themselves are in interfaces.metrics.
"""

from __future__ import annotations

import math
import resource
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import __version__, metrics
from .observations import QC_USED

if TYPE_CHECKING:  # pragma: no cover
    from .harness import Setup

#: How every summary figure is aggregated over the scored cycles (burn_in .. cycles-1).
#: ``<var>`` stands for each variable of a multi-variable model (h, u, v on the sphere).
AGGREGATION = {
    "analysis_rmse": "time mean of the per-cycle area-weighted RMSE of the analysis ensemble mean; "
                     "multi-variable models: per cycle, the root mean square over variables of each "
                     "variable's RMSE divided by its climatological std (dimensionless)",
    "analysis_rmse_<var>": "time mean of the per-cycle area-weighted RMSE of <var>, in its units",
    "background_rmse, background_rmse_<var>": "as analysis_rmse, for the background ensemble mean",
    "analysis_bias_<var>": "time mean of the per-cycle area-weighted mean error (estimate - truth) of "
                           "<var>, signed, in its units",
    "analysis_bias": "one-variable models: as analysis_bias_<var> (signed); multi-variable models: root "
                     "mean square over variables of analysis_bias_<var> divided by the climatological std, "
                     "as analysis_rmse normalises (non-negative, never above analysis_rmse)",
    "background_bias, background_bias_<var>": "as analysis_bias, for the background ensemble mean",
    "spread, spread_<var>": "sqrt of the time mean of the area-weighted (unbiased) analysis ensemble "
                            "variance; spread combines the variables as analysis_rmse does",
    "skill, skill_<var>": "sqrt of the time mean of the area-weighted squared error of the analysis "
                          "ensemble mean (WeatherBench 2's skill); skill combines the variables as "
                          "analysis_rmse does. Not analysis_rmse, which averages per-cycle RMSEs",
    "spread_skill, spread_skill_<var>": "sqrt((N+1)/N) * spread / skill with N members (WeatherBench 2); "
                                        "1 for a reliable ensemble",
    "crps, crps_<var>": "time mean of the per-cycle area-weighted fair CRPS of the analysis ensemble",
    "omb_norm, oma_norm": "sqrt of the time mean of the per-cycle mean square, over the observations "
                          "used, of (y - H(x)) / sigma_o with x the background (omb) or analysis (oma) "
                          "ensemble mean and sigma_o each observation's error std (dimensionless); "
                          "a well-tuned filter's omb_norm is near sqrt(1 + mean(HBH^T / R))",
    "omb_rms, oma_rms, omb_rms_<var>, oma_rms_<var>": "as omb_norm, without dividing by sigma_o, "
                                                       "per observed variable, in its units",
    "obs_used, obs_flagged": "counts over all completed cycles, burn-in included",
    "diag_*": "time mean of the method's per-cycle diagnostic",
    "seconds_per_cycle": "wall time of the cycles this process ran, divided by their number",
    "forecasts_per_cycle": "model integrations of one member per cycle: the ensemble size (1 for a "
                           "deterministic method)",
    "network_calls_per_cycle": "latent methods: time mean of the denoiser plus decoder forward passes per "
                               "cycle (each on the batch of members x samples), from diag_denoiser_calls "
                               "and diag_decoder_calls",
}


class Recorder:
    """Per-cycle records in memory; written to the run file by interfaces.io."""

    def __init__(self, s: "Setup"):
        n, shape = s.experiment.cycles, s.model.state_shape
        self.cycles = n
        self.background = np.full((n, *shape), np.nan)
        self.analysis = np.full((n, *shape), np.nan)
        self.ensemble = s.members > 1
        self.background_spread = np.full((n, *shape), np.nan) if self.ensemble else None
        self.analysis_spread = np.full((n, *shape), np.nan) if self.ensemble else None
        self.obs_qc = s.obs_qc.numpy().copy()
        self.scalars: dict[str, np.ndarray] = {}
        self.completed = 0
        self.weights = s.model.area_weights().to(torch.float64)
        self.has_channels = s.model.has_channels
        self.variables = s.model.variables

    def scalar(self, name: str, k: int, value: float) -> None:
        if name not in self.scalars:
            self.scalars[name] = np.full(self.cycles, np.nan)
        self.scalars[name][k] = value

    def record(self, k, truth, background, analysis, obs_values, used, operator_used, diagnostics, seconds):
        xb, xa = background.mean(0), analysis.mean(0)
        self.background[k] = xb.numpy()
        self.analysis[k] = xa.numpy()
        if self.ensemble:
            self.background_spread[k] = background.std(0).numpy()
            self.analysis_spread[k] = analysis.std(0).numpy()
            crps = metrics.crps_fair(analysis, truth, self.weights, self.has_channels)
            spread = metrics.spread(analysis, self.weights, self.has_channels)
            for v, name in enumerate(self.variables):
                self.scalar(self._name("analysis_crps", name), k, float(crps[v]))
                # Not "analysis_spread": that name is the (time, space) spread field in the run file.
                self.scalar(self._name("ensemble_spread", name), k, float(spread[v]))
        y = obs_values[used]
        if y.numel():
            both = operator_used(torch.stack([xb, xa]))
            std, channels = operator_used.std.to(y.dtype), operator_used.channels
            for role, hx in (("omb", both[0]), ("oma", both[1])):
                # Normalised by each observation's error std: comparable across variables and units.
                self.scalar(f"{role}_norm", k, metrics.departures_rms(y, hx, std))
                for v, name in enumerate(self.variables):
                    of_var = channels == v
                    if of_var.any():
                        self.scalar(self._name(f"{role}_rms", name), k, metrics.departures_rms(y[of_var], hx[of_var]))
        self.scalar("obs_used", k, float(y.numel()))
        self.scalar("seconds", k, seconds)
        for name, value in diagnostics.items():
            self.scalar(f"diag_{name}", k, float(value))
        self.completed = k + 1

    def _name(self, base: str, var: str) -> str:
        return f"{base}_{var}" if self.has_channels else base


def cycle_attrs(name: str, model) -> dict[str, str]:
    """netCDF attributes (units, long_name) of a per-cycle scalar ``name`` of the Recorder."""
    per_var = {f"{base}_{var}": (base, v) for base in ("omb_rms", "oma_rms", "analysis_crps", "ensemble_spread")
               for v, var in enumerate(model.variables)} if model.has_channels else {}
    base, v = per_var.get(name, (name, 0))
    long_names = {
        "omb_norm": "RMS over the used observations of (observation - H(background mean)) / observation-error std",
        "oma_norm": "RMS over the used observations of (observation - H(analysis mean)) / observation-error std",
        "omb_rms": "RMS of observation - H(background mean) over the used observations",
        "oma_rms": "RMS of observation - H(analysis mean) over the used observations",
        "analysis_crps": "area-weighted fair CRPS of the analysis ensemble",
        "ensemble_spread": "sqrt of the area-weighted unbiased variance of the analysis ensemble",
        "obs_used": "number of observations assimilated",
        "seconds": "wall time of the cycle",
    }
    units = {"omb_norm": "1", "oma_norm": "1", "obs_used": "1", "seconds": "s"}
    attrs = {"long_name": long_names.get(base, name.replace("_", " "))}
    if base in long_names:
        attrs["units"] = units.get(base, model.units[v])
    if base != name:
        attrs["long_name"] += f" of {model.variables[v]}"
    return attrs


def _time_rms(values: np.ndarray) -> float:
    """sqrt of the time mean of squares, over the finite entries (NaN if there are none)."""
    finite = values[np.isfinite(values)]
    return float(np.sqrt(np.mean(finite ** 2))) if finite.size else float("nan")


def summarise(s: "Setup", rec: Recorder, prepare_seconds: float, loop_seconds: float, start: int = 0) -> dict[str, Any]:
    """Scores over the cycles after burn-in, aggregated over time as AGGREGATION says."""
    exp, model = s.experiment, s.model
    keep = slice(exp.burn_in, rec.completed)
    truth = s.truth[1:][keep]
    weights, channels = rec.weights, model.has_channels
    variables = model.variables if channels else ()
    # Each variable's climatological std (area-weighted RMS): the scale metrics.combine divides by.
    scale = metrics.per_variable(s.climatology.var(0), weights, channels).sqrt()
    summary: dict[str, Any] = {
        "method": exp.method, "model": exp.model, "seed": exp.seed, "obs": exp.obs,
        "cycles": exp.cycles, "burn_in": exp.burn_in, "members": s.members,
        "n_obs": s.operator.n_obs,
    }
    errors = {}
    for role, arr in (("analysis", rec.analysis), ("background", rec.background)):
        estimate = torch.from_numpy(arr[keep])
        err = metrics.rmse(estimate, truth, weights, channels)  # (T, C)
        errors[role] = err
        summary[f"{role}_rmse"] = float(metrics.combine(err, scale).mean())
        for v, name in enumerate(variables):
            summary[f"{role}_rmse_{name}"] = float(err[:, v].mean())
        bias = metrics.bias(estimate, truth, weights, channels).mean(0)  # (C,) time-mean bias
        # One variable: the signed bias; several: normalised and combined as the RMSE is.
        summary[f"{role}_bias"] = float(metrics.combine(bias[None], scale)[0])
        for v, name in enumerate(variables):
            summary[f"{role}_bias_{name}"] = float(bias[v])
    if rec.ensemble:
        _spread_skill(summary, rec, errors["analysis"], scale, keep, s.members, variables)
    for role in ("omb", "oma"):
        for name in [f"{role}_norm", f"{role}_rms"] + [f"{role}_rms_{v}" for v in variables]:
            value = _time_rms(rec.scalars[name][keep]) if name in rec.scalars else float("nan")
            if math.isfinite(value):
                summary[name] = value
    summary["obs_flagged"] = int((rec.obs_qc[: rec.completed] != QC_USED).sum())
    # Says outright when nothing was assimilated (every value flagged: analysis = background).
    summary["obs_used"] = int(np.nansum(rec.scalars["obs_used"][: rec.completed])) if "obs_used" in rec.scalars else 0
    for name, arr in rec.scalars.items():
        if name.startswith("diag_"):
            summary[name] = float(np.nanmean(arr[keep]))
    done = rec.completed - start
    summary["prepare_seconds"] = prepare_seconds
    # What training the method's learned state cost, even when this run read it from the cache.
    summary["train_seconds"] = float(s.method.train_seconds or 0.0)
    summary["seconds_per_cycle"] = loop_seconds / done if done else float("nan")
    # The harness forecasts every member once per cycle.
    summary["forecasts_per_cycle"] = s.members
    calls = [summary[k] for k in ("diag_denoiser_calls", "diag_decoder_calls") if k in summary]
    if calls:
        summary["network_calls_per_cycle"] = float(sum(calls))
    summary["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    summary["version"] = __version__
    return summary


def _spread_skill(summary, rec: Recorder, err: torch.Tensor, scale, keep, members: int, variables) -> None:
    """WeatherBench 2's spread, skill and their ratio, per variable and combined (in place)."""
    names = [f"ensemble_spread_{v}" for v in variables] or ["ensemble_spread"]
    spread = torch.tensor([_time_rms(rec.scalars[n][keep]) for n in names], dtype=torch.float64)
    skill = err.pow(2).mean(0).sqrt()  # sqrt of the time-mean MSE, per variable (C,)
    for v, name in enumerate(variables):
        summary[f"spread_{name}"] = float(spread[v])
        summary[f"skill_{name}"] = float(skill[v])
        summary[f"spread_skill_{name}"] = metrics.spread_skill(float(spread[v]), float(skill[v]), members)
    summary["spread"] = float(metrics.combine(spread[None], scale)[0])
    summary["skill"] = float(metrics.combine(skill[None], scale)[0])
    summary["spread_skill"] = metrics.spread_skill(summary["spread"], summary["skill"], members)
    crps = [f"analysis_crps_{v}" for v in variables] or ["analysis_crps"]
    if not variables:
        summary["crps"] = float(np.nanmean(rec.scalars[crps[0]][keep]))
    for name, key in zip(variables, crps):
        summary[f"crps_{name}"] = float(np.nanmean(rec.scalars[key][keep]))
