"""Innovation diagnostics of one run file: is what a method assumed consistent with what it met?

For each observed variable, over the scored cycles (after the burn-in) and the observations
used, with d_b = y - H(x_b) and d_a = y - H(x_a) the departures of the observations from the
background and analysis (ensemble means):

- Desroziers et al. (2005, QJRMS 131, 3385): E[d_a d_b] = R and E[(H(x_a) - H(x_b)) d_b] = H B H^T
  when the gain is built from the true covariances. Their square roots (``sigma_o_desroziers``,
  ``sigma_b_desroziers``) beside the assumed observation-error std (``sigma_o_assumed``) show
  whether the analysis weighs the observations as their real errors and the background's
  real errors deserve: a sigma_b estimate below the background's true error means the method
  trusts its background too much.
- In a twin experiment the truth is known, so the background's real error at the observation
  sites (``sigma_b_true``, rms of H(x_b) - H(x_t)) and, for an ensemble, its spread there
  (``sigma_b_spread``, linear operators only) can be set beside the estimate.
- E[d_b^2] = H B H^T + R: ``innovation_ratio`` = mean(d_b^2) / (sigma_o^2 + sigma_b_spread^2)
  near 1 for an ensemble whose spread is right; above 1, under-dispersed.

Beside them, for a network of grid points (``all``, ``every``, ``random``, ``indices`` and their
arctan), the background and analysis errors (area-weighted RMS against the truth) at the grid
points observed and at the others: a method can weigh its observations as it should at their
sites and still spread their information badly to the rest of the grid, or lose it in the forecast.

And, with a truth, the systematic part of each error: the area-weighted RMS of its time mean
over the scored cycles (a stationary bias pattern) and that part's share of the mean squared
error. Under model error the background can be mostly bias, which no flow-dependent covariance
removes; a purely random error's share is about 1 / (independent cycles).

Needs a full run file (the fields): a slim archive copy has none.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import metrics
from .errors import DataError

#: The figures of one variable, in the order the table prints them.
COLUMNS = ("n", "sigma_o_assumed", "sigma_o_desroziers", "sigma_b_desroziers", "sigma_b_true", "sigma_b_spread",
           "omb_rms", "oma_rms", "innovation_ratio")


def innovation_statistics(path, burn_in: int | None = None, registry=None) -> dict[str, Any]:
    """{"file", "method", "model", "obs", "cycles_scored", "variables": {name: {column: value}}}
    over the cycles from ``burn_in`` (default: the run's own) to the last complete one."""
    import xarray as xr

    from .harness import build_model
    from .io import field_name, load_observations
    from .observations import QC_USED, ArctanOperator
    from .registry import get_registry

    path = Path(path)
    registry = registry or get_registry()
    try:
        ds = xr.open_dataset(path, engine="netcdf4", decode_times=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"diagnose: cannot read run file '{path}': {exc}") from None
    with ds:
        attrs = dict(ds.attrs)
        if "slim" in attrs:
            raise DataError(f"diagnose: '{path}' is a slim archive copy (no fields); give the full run file")
        if "model" not in attrs or "obs_value" not in ds:
            raise DataError(f"diagnose: '{path}' is not a da-harness run file (no model attribute or obs_value)")
        model = build_model(registry, attrs["model"], json.loads(attrs.get("model_options", "{}")), None)
        done = int(attrs.get("completed_cycles", ds.sizes["time"]))
        start = int(attrs.get("burn_in", 0) if burn_in is None else burn_in)
        if not 0 <= start < done:
            raise DataError(f"diagnose: burn-in {start} leaves no scored cycle of the {done} complete in '{path}'")
        op, values, std, qc = load_observations(path, model, done, registry)
        if "obs_arctan_mean" in ds:  # the run observed arctan of the standardised anomaly
            op = ArctanOperator(op, ds["obs_arctan_mean"].values, ds["obs_arctan_scale"].values, op.std, op.spec)

        def fields(role: str) -> torch.Tensor | None:
            names = [field_name(model, role, v) for v in model.variables]
            if any(n not in ds for n in names):
                return None
            stacked = np.stack([ds[n].values[start:done] for n in names], axis=1) if model.has_channels \
                else ds[names[0]].values[start:done]
            return torch.from_numpy(stacked.astype(np.float64)).reshape(done - start, *model.state_shape)

        background, analysis, truth = fields("background"), fields("analysis"), fields("truth")
        if background is None or analysis is None:
            raise DataError(f"diagnose: '{path}' holds no background or analysis fields")
        spread = fields("background_spread") if op.linear and int(attrs.get("members", 1)) > 1 else None

    y, used = values[start:done], qc[start:done] == QC_USED
    hb, ha = op(background), op(analysis)
    ht = op(truth) if truth is not None else None
    # The background variance at each site: exact for a point selection, a weighted sum of the
    # grid points' variances (covariances left out) for an interpolating operator.
    var_b = op(spread ** 2) if spread is not None else None
    std_o = std[None, :].expand_as(y)
    out = {}
    for c, name in enumerate(model.variables):
        mask = used & (op.channels == c)[None, :]
        if not bool(mask.any()):
            continue
        d_b, d_a = (y - hb)[mask], (y - ha)[mask]
        row: dict[str, float] = {
            "n": int(mask.sum()),
            "sigma_o_assumed": _rms(std_o[mask]),
            "sigma_o_desroziers": _root(float((d_a * d_b).mean())),
            "sigma_b_desroziers": _root(float(((ha - hb)[mask] * d_b).mean())),
            "sigma_b_true": _rms((hb - ht)[mask]) if ht is not None else math.nan,
            "sigma_b_spread": math.nan, "omb_rms": _rms(d_b), "oma_rms": _rms(d_a), "innovation_ratio": math.nan,
        }
        if var_b is not None:
            row["sigma_b_spread"] = _rms(var_b[mask].clamp_min(0).sqrt())
            expected = (std_o[mask] ** 2 + var_b[mask]).mean()
            row["innovation_ratio"] = float((d_b ** 2).mean() / expected)
        out[name] = row
    return {"file": str(path), "method": attrs.get("method"), "model": attrs.get("model"), "obs": attrs.get("obs"),
            "members": int(attrs.get("members", 1)), "burn_in": start, "cycles_scored": done - start, "variables": out,
            "coverage": error_by_coverage(model, op, background, analysis, truth),
            "systematic": systematic_error(model, background, analysis, truth)}


#: The figures of the coverage table, per variable.
COVERAGE_COLUMNS = ("observed_points", "rmse_b_observed", "rmse_b_unobserved", "rmse_a_observed", "rmse_a_unobserved")


def error_by_coverage(model, op, background, analysis, truth) -> dict[str, dict[str, float]]:
    """Per variable, the area-weighted RMS background and analysis errors at the grid points the
    network observes and at the others ({} without a truth or for an interpolating network)."""
    inner = getattr(op, "inner", op)
    index, weight = getattr(inner, "index", None), getattr(inner, "weight", None)
    if truth is None or index is None or index.shape[-1] != 1 or bool((weight != 1).any()):
        return {}
    observed = torch.zeros(math.prod(model.state_shape), dtype=torch.bool)
    observed[index.reshape(-1)] = True
    observed = observed.reshape(model.state_shape)
    area = model.area_weights()
    out = {}
    for c, name in enumerate(model.variables):
        pick = (lambda x: x[:, c]) if model.has_channels else (lambda x: x)  # noqa: E731
        mask = observed[c] if model.has_channels else observed
        if not bool(mask.any()):
            continue
        row = {"observed_points": float(mask.double().mean())}
        for tag, field in (("b", background), ("a", analysis)):
            sq = (pick(field) - pick(truth)).pow(2) * area
            for where, m in (("observed", mask), ("unobserved", ~mask)):
                w = area[m].sum() * field.shape[0]
                row[f"rmse_{tag}_{where}"] = float((sq[:, m].sum() / w).sqrt()) if bool(m.any()) else math.nan
        out[name] = row
    return out


#: The figures of the systematic-error table, per variable.
SYSTEMATIC_COLUMNS = ("rmse_b", "bias_b", "bias_share_b", "rmse_a", "bias_a", "bias_share_a")


def systematic_error(model, background, analysis, truth) -> dict[str, dict[str, float]]:
    """Per variable, for the background (b) and the analysis (a): the area-weighted RMS error
    over the cycles given (``rmse``), the area-weighted RMS of its time-mean field (``bias``:
    the error every cycle shares) and bias^2 / rmse^2 (``bias_share``, 0 to 1). {} without a truth."""
    if truth is None:
        return {}
    area, out = model.area_weights(), {name: {} for name in model.variables}
    for tag, field in (("b", background), ("a", analysis)):
        error = field - truth
        mse = metrics.per_variable(error.pow(2).mean(0), area, model.has_channels)
        bias = metrics.per_variable(error.mean(0).pow(2), area, model.has_channels)
        for name, m, b in zip(model.variables, mse.tolist(), bias.tolist()):
            out[name].update({f"rmse_{tag}": math.sqrt(m), f"bias_{tag}": math.sqrt(b),
                              f"bias_share_{tag}": b / m if m > 0 else math.nan})
    return out


def _rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt()) if x.numel() else math.nan


def _root(mean_product: float) -> float:
    """sqrt of a Desroziers mean product; NaN when it is negative (the relation does not hold)."""
    return math.sqrt(mean_product) if mean_product >= 0 else math.nan


def _cell(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value:.4g}"


def format_statistics(stats: dict[str, Any]) -> str:
    """A markdown table, one row per observed variable, with how to read it."""
    head = (f"# Innovation diagnostics: {stats['method']} on {stats['model']} ({stats['obs']}, "
            f"{stats['members']} member(s)), cycles {stats['burn_in']}-{stats['burn_in'] + stats['cycles_scored'] - 1}")
    lines = [head, "", "| variable | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for name, row in stats["variables"].items():
        cells = [str(row["n"])] + [_cell(row[c]) for c in COLUMNS[1:]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if stats.get("coverage"):
        lines += ["", "| variable | " + " | ".join(COVERAGE_COLUMNS) + " |", "|---|" + "---:|" * len(COVERAGE_COLUMNS)]
        for name, row in stats["coverage"].items():
            lines.append(f"| {name} | " + " | ".join(_cell(row[c]) for c in COVERAGE_COLUMNS) + " |")
    if stats.get("systematic"):
        lines += ["", "| variable | " + " | ".join(SYSTEMATIC_COLUMNS) + " |", "|---|" + "---:|" * len(SYSTEMATIC_COLUMNS)]
        for name, row in stats["systematic"].items():
            lines.append(f"| {name} | " + " | ".join(_cell(row[c]) for c in SYSTEMATIC_COLUMNS) + " |")
    lines += ["", "sigma_o_desroziers = sqrt(mean(d_a d_b)) estimates the observation-error std the analysis "
                  "behaved as if it had (compare sigma_o_assumed); sigma_b_desroziers = sqrt(mean((H x_a - H x_b) "
                  "d_b)) the background-error std it assumed at the sites; sigma_b_true is the background's real "
                  "error there (the truth is known in a twin), sigma_b_spread the ensemble's background spread. "
                  "innovation_ratio = mean(d_b^2) / (sigma_o^2 + spread^2): 1 when the spread is right, above 1 "
                  "under-dispersed. Departures are in the observations' units (radians for arctan). Desroziers et "
                  "al. 2005."]
    if stats.get("coverage"):
        lines[-1] += (" Second table: the share of grid points observed, and the area-weighted RMS background (b) and "
                      "analysis (a) errors against the truth at those points and at the others, in the variable's units.")
    if stats.get("systematic"):
        lines[-1] += (f" Last table: the area-weighted RMS error (rmse), the RMS of its time mean over the "
                      f"{stats['cycles_scored']} scored cycles (bias: the error every cycle shares) and bias^2 / rmse^2 "
                      f"(bias_share); a purely random error's share is about 1 / (independent cycles), so a large "
                      f"share is a systematic error, such as a model error's, that the method leaves in place.")
    return "\n".join(lines)


def add_diagnose_parser(sub) -> None:
    p = sub.add_parser("diagnose", help="innovation diagnostics of a run file (Desroziers, spread, true error)")
    p.add_argument("run_file", help="a full run file written by run or compare (not a slim archive copy)")
    p.add_argument("--burn-in", type=int, default=None, help="cycles left out (default: the run's own burn-in)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")


def cmd_diagnose(args, registry) -> int:
    stats = innovation_statistics(args.run_file, args.burn_in, registry)
    if args.json:
        def finite(table):
            return {k: {c: (v if not isinstance(v, float) or math.isfinite(v) else None) for c, v in row.items()}
                    for k, row in table.items()}
        clean = {**stats, **{k: finite(stats[k]) for k in ("variables", "coverage", "systematic")}}
        print(json.dumps(clean))
    else:
        print(format_statistics(stats))
    return 0
