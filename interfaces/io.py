"""Run files: netCDF through xarray, CF-style names and units, one record per cycle.

A run file is written atomically (a temporary file, then a rename), so a kill at any moment
leaves either the previous complete file or the new one, holding only complete cycles. It also
carries what a resumed run needs: the last analysis ensemble, the random streams' states and the
method's state.
"""

from __future__ import annotations

import json
import os
import pickle
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xarray as xr

from . import __version__, metrics
from .errors import DataError, UsageError
from .observations import QC_MEANINGS

if TYPE_CHECKING:  # pragma: no cover
    from .harness import Recorder, Setup

ROLES = {
    "truth": "true state",
    "background": "background (forecast) ensemble mean",
    "analysis": "analysis ensemble mean",
    "background_spread": "background ensemble standard deviation",
    "analysis_spread": "analysis ensemble standard deviation",
}


def field_name(model, role: str, variable: str) -> str:
    """Name of a state field in the run file: ``role`` for one-variable models, else ``role_var``."""
    return f"{role}_{variable}" if model.has_channels else role


def _time_coord(model, n: int, start: int = 0) -> tuple:
    values = (np.arange(start, start + n) + 1) * model.cycle_length
    units = model.time_units
    if units in ("hours", "days", "minutes", "seconds"):
        units = f"{units} since 2000-01-01 00:00:00"
    return ("time", values, {"units": units, "long_name": "valid time of the analysis", "standard_name": "time"})


def build_dataset(s: "Setup", rec: "Recorder", resume: dict | None = None, summary: dict | None = None) -> xr.Dataset:
    """The run file's Dataset for the first ``rec.completed`` cycles."""
    model, exp = s.model, s.experiment
    n = rec.completed
    spatial = model.grid_coords()
    spatial_dims = [spec[0] for spec in spatial.values()]
    coords: dict[str, Any] = {name: spec for name, spec in spatial.items()}
    coords["time"] = _time_coord(model, n)
    coords["cycle"] = ("time", np.arange(n), {"long_name": "cycle number"})
    data: dict[str, Any] = {}

    fields = {"truth": s.truth[1 : n + 1].numpy(), "background": rec.background[:n], "analysis": rec.analysis[:n]}
    if rec.ensemble:
        fields["background_spread"] = rec.background_spread[:n]
        fields["analysis_spread"] = rec.analysis_spread[:n]
    for role, arr in fields.items():
        for v, var in enumerate(model.variables):
            values = arr[:, v] if model.has_channels else arr
            attrs = {"units": model.units[v], "long_name": f"{ROLES[role]} of {var}"}
            if model.standard_names[v] and "spread" not in role:
                attrs["standard_name"] = model.standard_names[v]
            data[field_name(model, role, var)] = (("time", *spatial_dims), values, attrs)

    # Per-cycle scores, recomputed from the recorded means so they always match the fields.
    truth = s.truth[1 : n + 1]
    scale = metrics.per_variable(s.climatology.var(0), rec.weights, model.has_channels).sqrt()
    for role in ("background", "analysis"):
        err = metrics.rmse(torch.from_numpy(fields[role]), truth, rec.weights, model.has_channels)
        unit = model.units[0] if not model.has_channels else "1"
        data[f"{role}_rmse"] = ("time", metrics.combine(err, scale).numpy(),
                                {"units": unit, "long_name": f"{role} RMSE" + (" normalised by climatological std" if model.has_channels else "")})
        if model.has_channels:
            for v, var in enumerate(model.variables):
                data[f"{role}_rmse_{var}"] = ("time", err[:, v].numpy(), {"units": model.units[v], "long_name": f"area-weighted {role} RMSE of {var}"})
    for name, arr in rec.scalars.items():
        data[name] = ("time", arr[:n], {"long_name": name.replace("_", " ")})

    # Observations.
    op = s.operator
    loc = op.locations.numpy()
    obs_coords = {"obs_variable": ("obs", np.array([model.variables[c] for c in op.channels.tolist()], dtype=object),
                                   {"long_name": "observed variable"})}
    for i in range(loc.shape[1]):
        name = model.location_names[i] if i < len(model.location_names) else f"location{i}"
        units = model.location_units[i] if i < len(model.location_units) else "1"
        obs_coords[f"obs_{name}"] = ("obs", loc[:, i], {"units": units, "long_name": f"observation {name}"})
    coords.update(obs_coords)
    data["obs_value"] = (("time", "obs"), s.obs_values[:n].numpy(), {"long_name": "observed value", "coordinates": " ".join(obs_coords)})
    data["obs_std"] = (("time", "obs"), np.broadcast_to(s.obs_std.numpy(), (n, op.n_obs)).copy(), {"long_name": "observation-error standard deviation"})
    data["obs_qc"] = (("time", "obs"), rec.obs_qc[:n].astype(np.int8),
                      {"long_name": "quality-control flag", "flag_values": np.arange(4, dtype=np.int8), "flag_meanings": QC_MEANINGS})

    if resume is not None:
        ens = resume["ensemble"]
        data["resume_ensemble"] = (("member", *[f"state_{i}" for i in range(ens.ndim - 1)]), ens,
                                   {"long_name": "analysis ensemble after the last complete cycle (for --resume)"})
        data["resume_forecast_rng"] = ("forecast_rng_bytes", resume["forecast_rng"])
        data["resume_method_rng"] = ("method_rng_bytes", resume["method_rng"])
        data["resume_method_state"] = ("method_state_bytes", np.frombuffer(resume["method_state"], dtype=np.uint8))

    complete = n == exp.cycles
    attrs = {
        "Conventions": "CF-1.8",
        "title": f"{exp.method} on {exp.model}",
        "source": f"da-harness {__version__}",
        "history": f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} da-harness run",
        "method": exp.method, "model": exp.model, "obs": exp.obs, "seed": exp.seed,
        "members": s.members, "cycles": exp.cycles, "burn_in": exp.burn_in,
        "completed_cycles": n, "status": "complete" if complete else "partial",
        "settings": json.dumps(exp.settings(), sort_keys=True, default=str),
        "model_options": json.dumps(model.options, sort_keys=True, default=str),
        "method_options": json.dumps(s.method.options, sort_keys=True, default=str),
        "package_version": __version__,
    }
    if summary is not None:
        attrs["summary"] = json.dumps(summary, default=float)
    return xr.Dataset(data, coords=coords, attrs=attrs)


def write_atomic(ds: xr.Dataset, path: Path) -> None:
    """Write ``ds`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        ds.to_netcdf(tmp, engine="netcdf4")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_run(path, s: "Setup", rec: "Recorder", resume: dict | None = None, summary: dict | None = None) -> None:
    write_atomic(build_dataset(s, rec, resume, summary), Path(path))


def open_run(path) -> xr.Dataset:
    """Open a run file, with a one-line error naming the file if it is missing or corrupt."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"run file '{path}' does not exist")
    try:
        return xr.open_dataset(path, engine="netcdf4", decode_times=False)
    except Exception as exc:  # noqa: BLE001 - any decoding failure means an unusable file
        raise DataError(f"run file '{path}' is corrupt or not netCDF: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def load_resume(path, s: "Setup", rec: "Recorder") -> dict[str, Any]:
    """Fill ``rec`` with the complete cycles of ``path`` and return the state to continue from."""
    with open_run(path) as ds:
        ds.load()
    try:
        stored = json.loads(ds.attrs["settings"])
    except (KeyError, ValueError):
        raise DataError(f"run file '{path}' has no readable 'settings' attribute; it was not written by da-harness run") from None
    current = json.loads(json.dumps(s.experiment.settings(), sort_keys=True, default=str))
    for key in sorted(set(stored) | set(current)):
        if stored.get(key) != current.get(key):
            raise UsageError(f"cannot resume '{path}': it was run with {key}={stored.get(key)!r}, not {current.get(key)!r}")
    if "resume_ensemble" not in ds:
        raise DataError(f"run file '{path}' has no variable 'resume_ensemble'; it cannot be resumed")
    n = int(ds.attrs.get("completed_cycles", 0))
    model = s.model
    for role, arr in (("background", rec.background), ("analysis", rec.analysis),
                      ("background_spread", rec.background_spread), ("analysis_spread", rec.analysis_spread)):
        if arr is None:
            continue
        for v, var in enumerate(model.variables):
            values = ds[field_name(model, role, var)].values
            if model.has_channels:
                arr[:n, v] = values
            else:
                arr[:n] = values
    rec.obs_qc[:n] = ds["obs_qc"].values
    derived = {"background_rmse", "analysis_rmse"} | {f"{r}_rmse_{v}" for r in ("background", "analysis") for v in model.variables}
    for name, var in ds.data_vars.items():
        if var.dims == ("time",) and name not in derived:
            rec.scalars[name] = np.full(rec.cycles, np.nan)
            rec.scalars[name][:n] = var.values
    rec.completed = n
    return {
        "completed": n,
        "ensemble": torch.from_numpy(ds["resume_ensemble"].values.astype(np.float64)),
        "forecast_rng": torch.from_numpy(ds["resume_forecast_rng"].values.astype(np.uint8)),
        "method_rng": torch.from_numpy(ds["resume_method_rng"].values.astype(np.uint8)),
        "method_state": pickle.loads(ds["resume_method_state"].values.astype(np.uint8).tobytes()),
    }


def load_truth(path, model, cycles: int) -> torch.Tensor:
    """A truth trajectory from a run-format file (``--truth``)."""
    raise UsageError("--truth is not supported yet")


def load_observations(path, model, cycles: int, registry):
    """Observations from a run-format file (``--observations``)."""
    raise UsageError("--observations is not supported yet")
