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

from . import __version__, metrics, scoring
from .errors import DataError, UsageError
from .observations import QC_MEANINGS, usable_std
from .cache import run_code_version
from .provenance import code_commit

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
        data[name] = ("time", arr[:n], scoring.cycle_attrs(name, model))

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
    # No explicit 'coordinates' attribute: xarray writes it from the obs coordinates and takes it
    # back on reading, so the Dataset in memory (interfaces.api.run) equals the file read back.
    data["obs_value"] = (("time", "obs"), s.obs_values[:n].numpy(), {"long_name": "observed value"})
    data["obs_std"] = (("time", "obs"), np.broadcast_to(s.obs_std.numpy(), (n, op.n_obs)).copy(), {"long_name": "observation-error standard deviation"})
    for name, (values, field_attrs) in getattr(op, "file_fields", dict)().items():  # e.g. arctan's mean and scale
        data[name] = ("obs", values.numpy(), field_attrs)
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
        "members": s.members, "cycles": exp.cycles, "burn_in": exp.burn_in, "device": str(exp.device),
        "completed_cycles": n, "status": "complete" if complete else "partial",
        "settings": json.dumps(exp.settings(), sort_keys=True, default=str),
        "model_options": json.dumps(model.options, sort_keys=True, default=str),
        # The truth run's model (other options in an imperfect-model twin; "" for a --truth file)
        # and its stochastic forcing (interfaces/model_error.py).
        "truth_model_options": ("" if getattr(s, "truth_model_options", None) is None
                                else json.dumps(s.truth_model_options, sort_keys=True, default=str)),
        "model_error": (exp.model_error or "none").strip() or "none",
        # A forecast-bias correction (interfaces/forecast_bias.py): the data model's options and
        # the area-weighted RMS of b per variable; only when one was used.
        **_forecast_bias_attrs(s, model),
        "method_options": json.dumps(s.method.options, sort_keys=True, default=str),
        "package_version": __version__,
        "code_commit": code_commit(),  # the checkout that made this file (see interfaces/provenance.py)
        # The source that determines its numbers: compare reruns a job whose file lacks this one.
        "code_version": run_code_version(model, s.method),
    }
    if summary is not None:
        attrs["summary"] = json.dumps(summary, default=float)
        # How each summary figure is aggregated over the scored cycles (README, "Scores").
        attrs["aggregation"] = json.dumps(scoring.AGGREGATION)
    return xr.Dataset(data, coords=coords, attrs=attrs)


def write_atomic(ds: xr.Dataset, path: Path) -> None:
    """Write ``ds`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.partial"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    # Fletcher-32 checksums on numeric variables: bytes damaged after writing fail on read
    # instead of silently feeding a resumed run.
    encoding = {name: {"fletcher32": True} for name, var in ds.variables.items() if var.dtype.kind in "biuf" and var.ndim > 0}
    try:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_output(path, resume: bool = False, overwrite: bool = False) -> Path:
    """Check ``--out`` before the first cycle, so a finished run is never lost at the last write.

    The path must not be a directory, its folder must be creatable and writable. An existing
    file is kept unless asked: ``resume`` continues it, ``overwrite`` replaces it; otherwise a
    complete run, a partial one or any other file is refused, naming it."""
    path = Path(path)
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other: continue the run file, or replace it")
    if path.is_dir():
        raise UsageError(f"--out '{path}' is a directory; give a file in it, e.g. '{path / 'run.nc'}'")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out '{path}': cannot create its folder '{parent}': {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out '{path}': folder '{parent}' is not writable")
    if not path.exists():
        return path
    if not os.access(path, os.W_OK):
        raise UsageError(f"--out '{path}' exists and is not writable")
    if resume or overwrite:
        return path
    try:
        with xr.open_dataset(path, engine="netcdf4", decode_times=False) as ds:
            status = ds.attrs.get("status")
            done, total = ds.attrs.get("completed_cycles"), ds.attrs.get("cycles")
    except Exception:  # noqa: BLE001 - not netCDF: still someone's file
        status = None
    if status == "complete":
        raise UsageError(f"--out '{path}' already holds a complete run; give --overwrite to replace it, or another --out")
    if status == "partial":
        raise UsageError(f"--out '{path}' holds a partial run ({done} of {total} cycles); give --resume to continue it "
                         f"or --overwrite to start over")
    raise UsageError(f"--out '{path}' exists and is not a da-harness run file; give --overwrite to replace it")


def _forecast_bias_attrs(s, model) -> dict[str, str]:
    if getattr(s, "forecast_bias", None) is None:
        return {}
    from .forecast_bias import rms_per_variable

    return {"forecast_bias_options": json.dumps(s.forecast_bias_options, sort_keys=True, default=str),
            "forecast_bias_rms": json.dumps(rms_per_variable(s.forecast_bias, model))}


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
        try:
            ds.load()  # reads every byte: checksums catch damage here, before anything is used
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"run file '{path}' is damaged (checksum or read failure): {type(exc).__name__}: {exc}") from None
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


TIME_RULE = """How ``--truth`` and ``--observations`` files line up with the cycles.

The harness's time axis puts the initial state at time 0 and the analysis of cycle k at
(k + 1) * cycle_length, as run files write it. A file with a ``time`` coordinate is placed on
that axis by its time stamps, and an observation is paired with the truth of the same time:

* the first analysis time comes from the observations file (its first time, or its second
  when the first is 0, the initial time that no cycle assimilates); else from the truth file:
  its first time with ``truth_initial``, its first time when that is one cycle length (a run
  file: no initial state), otherwise one cycle after its first time (the first is the initial);
* the truth is read from the initial time (one cycle before the first analysis time) on; a
  truth file that starts at the first analysis time has no initial state, which the harness
  never scores or observes (index 0 of the truth is then NaN);
* times must be spaced by the model's cycle length; a file that does not hold the paired
  times is refused, naming both.

A file without a ``time`` coordinate is read by position: a truth file's first entry is the
initial state (unless it has ``truth_initial``), an observations file's first is cycle 0's."""


def load_inputs(truth_path, observations_path, model, cycles: int, registry):
    """The ``--truth`` and ``--observations`` files (either may be None), aligned in time as
    :data:`TIME_RULE` says. Returns (truth or None, observations tuple or None); see
    :func:`load_truth` and :func:`load_observations` for what each holds."""
    truth_ds = _open_input(Path(truth_path), "truth") if truth_path else None
    obs_ds = _open_input(Path(observations_path), "observations") if observations_path else None
    truth_times = _times(truth_ds, truth_path, "truth", model) if truth_ds is not None else None
    obs_times = _times(obs_ds, observations_path, "observations", model) if obs_ds is not None else None
    has_initial = truth_ds is not None and _has_truth_initial(truth_ds, model)
    first = _first_analysis_time(truth_times, has_initial, obs_times, model.cycle_length)
    truth = obs = None
    if truth_ds is not None:
        truth = _truth_from(truth_ds, Path(truth_path), model, cycles, truth_times, has_initial, first,
                            "the observations file" if obs_times is not None else "the truth file")
    if obs_ds is not None:
        obs = _observations_from(obs_ds, Path(observations_path), model, cycles, obs_times, first, truth_path)
    return truth, obs


def load_truth(path, model, cycles: int) -> torch.Tensor:
    """A truth trajectory from a run-format file (``--truth``), shaped (cycles + 1, *state_shape).

    Variables ``truth`` (one-variable models) or ``truth_<var>``, dims (time, *spatial dims) as
    build_dataset writes them. The initial state comes from a variable ``truth_initial`` /
    ``truth_initial_<var>`` (spatial dims only; then ``time`` starts at the first analysis time,
    so a run file plus that variable is a valid truth file) or, without it, from the time one
    cycle before the first analysis time (see :data:`TIME_RULE`: a run file's times start at the
    first analysis time, so it has no initial state and index 0 is NaN). Extra times are ignored.
    """
    return load_inputs(path, None, model, cycles, None)[0]


def load_observations(path, model, cycles: int, registry):
    """Observations from a run-format file (``--observations``).

    ``obs_value`` (time, obs) for the analysis times 1..cycles (extra times are ignored; a first
    time of 0, the initial time, is skipped: see :data:`TIME_RULE`),
    ``obs_std`` (obs) or (time, obs) constant in time, optional ``obs_qc`` (time, obs) with the
    codes of interfaces.observations, coordinates ``obs_<location name>`` (obs) in the model's
    location units and ``obs_variable`` (obs; optional for one-variable models). NaN or infinite
    values are flagged QC_MISSING, not an error. Each location must be inside the model's domain
    and be a grid point, unless the model offers ``interpolation(coords) -> (index, weight)``
    (flattened grid-point indices and weights, each (n, k)) for off-grid sites.
    Returns (operator, values (cycles, n_obs), std (n_obs,), qc (cycles, n_obs) int8).
    """
    return load_inputs(None, path, model, cycles, registry)[1]


def _has_truth_initial(ds, model) -> bool:
    return any(field_name(model, "truth_initial", v) in ds for v in model.variables)


def _same_time(a: float, b: float, cycle_length: float) -> bool:
    return abs(a - b) <= 1e-6 * cycle_length


def _index_of(times: np.ndarray, t: float, cycle_length: float) -> int | None:
    hits = np.flatnonzero(np.abs(times - t) <= 1e-6 * cycle_length)
    return int(hits[0]) if hits.size else None


def _first_analysis_time(truth_times, has_initial: bool, obs_times, cycle_length: float) -> float | None:
    """The time of cycle 0's analysis on the files' own axis, or None (read by position)."""
    if obs_times is not None:
        if _same_time(obs_times[0], 0.0, cycle_length) and obs_times.size > 1:
            return float(obs_times[1])  # time 0 is the initial state: no cycle assimilates it
        return float(obs_times[0])
    if truth_times is not None:
        if has_initial or _same_time(truth_times[0], cycle_length, cycle_length):
            return float(truth_times[0])
        return float(truth_times[0]) + cycle_length
    return None


def _span(times: np.ndarray) -> str:
    return f"{times[0]:g}" if times.size == 1 else f"{times[0]:g} to {times[-1]:g}"


def _truth_from(ds, path: Path, model, cycles: int, times, has_initial: bool, first, source: str) -> torch.Tensor:
    names = [field_name(model, "truth", v) for v in model.variables]
    L = model.cycle_length
    _check_timed(ds, path, "truth", names[0])
    start, with_initial = 0, True
    if times is not None and first is not None:
        at_first = _index_of(times, first, L)
        before = _index_of(times, first - L, L)
        if has_initial:
            if at_first != 0:
                raise _bad(path, "truth", "time", f"starts at {times[0]:g}; with 'truth_initial' it must start at "
                           f"the first analysis time {first:g} (from {source})")
            with_initial = False
        elif before is not None:
            start = before
        elif at_first == 0:
            with_initial = False  # a run file's times: no initial state, which nothing uses
        else:
            raise _bad(path, "truth", "time", f"runs {_span(times)}, which holds neither the first analysis time "
                       f"{first:g} (from {source}) nor the initial time {first - L:g} before it")
    elif has_initial:
        with_initial = False
    need = cycles + 1 if with_initial else cycles
    hint = ("plus 'truth_initial'" if has_initial else
            "(the first is the initial state; or add 'truth_initial')" if with_initial else
            "(it starts at the first analysis time: no initial state)")
    _check_length(ds, path, "truth", names[0], start, need, cycles, hint, times)
    fields = []
    for v, name in enumerate(names):
        values = _field(ds, path, "truth", name, model, v, timed=True)[start:start + need]
        if has_initial:
            initial = _field(ds, path, "truth", field_name(model, "truth_initial", v), model, v, timed=False)
            values = np.concatenate([initial[None], values])
        elif not with_initial:
            values = np.concatenate([np.full_like(values[:1], np.nan), values])
        fields.append(values)
    truth = np.stack(fields, axis=1) if model.has_channels else fields[0]
    return torch.from_numpy(np.ascontiguousarray(truth, dtype=np.float64))


def _observations_from(ds, path: Path, model, cycles: int, times, first, truth_path):
    from .observations import QC_MISSING, QC_USED, SparseLinearOperator

    if "obs_value" not in ds:
        raise _bad(path, "observations", "obs_value", "is missing")
    var = ds["obs_value"]
    if var.dims != ("time", "obs"):
        raise _bad(path, "observations", "obs_value", f"has dims {var.dims}, expected ('time', 'obs')")
    start = 0
    if times is not None and first is not None:
        start = _index_of(times, first, model.cycle_length)
        if start is None:  # only when the first time came from elsewhere
            raise _bad(path, "observations", "time", f"runs {_span(times)}, which does not hold the first analysis "
                       f"time {first:g} (from truth file '{truth_path}')")
    _check_length(ds, path, "observations", "obs_value", start, cycles, cycles, "(one per cycle)", times)
    n_obs = ds.sizes["obs"]
    if n_obs == 0:
        raise _bad(path, "observations", "obs_value", "holds no observation")
    values = _numeric(var, path, "observations", "obs_value")[start:start + cycles]

    std = _obs_std(ds, path, start, cycles)
    qc = np.zeros(values.shape, dtype=np.int8)
    if "obs_qc" in ds:
        qc = _obs_qc(ds, path, start, cycles)
    qc[(qc == QC_USED) & ~np.isfinite(values)] = QC_MISSING

    coords = _obs_locations(ds, path, model)
    channels = torch.from_numpy(_obs_channels(ds, path, model, n_obs))
    index, weight = _locate(coords, model, path)
    op = SparseLinearOperator(model.state_shape, model.flat_index(channels[:, None], index), weight,
                              std, coords, channels, spec=f"file:{path.name}")
    return (op, torch.from_numpy(values.astype(np.float64)), torch.from_numpy(std),
            torch.from_numpy(qc))


# --- validation helpers for --truth / --observations -------------------------------------------

def _bad(path, what: str, variable: str, problem: str) -> DataError:
    return DataError(f"{what} file '{path}': variable '{variable}' {problem}")


def _open_input(path: Path, what: str) -> xr.Dataset:
    if not path.exists():
        raise DataError(f"{what} file '{path}' does not exist")
    try:
        with xr.open_dataset(path, engine="netcdf4", decode_times=False) as ds:
            return ds.load()  # read everything now: a truncated file fails here, not mid-run
    except Exception as exc:  # noqa: BLE001 - any decoding failure means an unusable file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataError(f"{what} file '{path}' is corrupt or not netCDF: {type(exc).__name__}: {reason}") from None


def _numeric(var: xr.DataArray, path, what: str, name: str) -> np.ndarray:
    if var.dtype.kind not in "fiu":
        raise _bad(path, what, name, f"is not numeric (dtype {var.dtype})")
    return np.asarray(var.values, dtype=np.float64)


def _check_units(var: xr.DataArray, expected: str, path, what: str, name: str) -> None:
    # A missing attribute means "the model's units"; a different one is a mismatch.
    units = var.attrs.get("units")
    if units is not None and str(units).strip() != expected:
        raise _bad(path, what, name, f"has units '{units}', model expects '{expected}'")


def _times(ds, path, what: str, model) -> np.ndarray | None:
    """The file's ``time`` coordinate, checked (finite, increasing, one cycle apart, the model's
    units), or None when it has none."""
    if "time" not in ds.coords:
        return None
    t = _numeric(ds["time"], path, what, "time").reshape(-1)
    if t.size == 0:
        return None
    if not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise _bad(path, what, "time", "is not finite and strictly increasing")
    step = np.diff(t)
    if step.size and not np.allclose(step, model.cycle_length, rtol=1e-6):
        raise _bad(path, what, "time", f"has spacing {step[0]:g}, the model's cycle is {model.cycle_length:g}")
    units = ds["time"].attrs.get("units")
    if units is not None and str(units).split(" since ")[0].strip() != model.time_units:
        raise _bad(path, what, "time", f"has units '{units}', model expects '{model.time_units}'")
    return t


def _check_timed(ds, path, what: str, name: str) -> None:
    if name not in ds:
        raise _bad(path, what, name, "is missing")
    if "time" not in ds[name].dims:
        raise _bad(path, what, name, f"has no 'time' dimension (dims {ds[name].dims})")


def _check_length(ds, path, what: str, name: str, start: int, need: int, cycles: int, hint: str, times) -> None:
    _check_timed(ds, path, what, name)
    n = ds.sizes["time"] - start
    if n < need:
        where = f" from time {times[start]:g}" if start and times is not None else ""
        raise _bad(path, what, name, f"holds {n} times{where}; --cycles {cycles} needs {need} {hint}")


def _field(ds, path, what: str, name: str, model, v: int, timed: bool) -> np.ndarray:
    """One variable's values, as (time, *spatial) or (*spatial), checked against the grid."""
    if name not in ds:
        raise _bad(path, what, name, "is missing")
    grid = model.grid_coords()
    dims = [spec[0] for spec in grid.values()]
    want = (["time"] if timed else []) + dims
    var = ds[name]
    if sorted(var.dims) != sorted(want):
        raise _bad(path, what, name, f"has dims {var.dims}, expected {tuple(want)}")
    var = var.transpose(*want)
    for coord, (dim, expected, _) in grid.items():
        if ds.sizes[dim] != len(expected):
            raise _bad(path, what, name, f"has {ds.sizes[dim]} points along '{dim}', model {model.name} has {len(expected)}")
        if coord in ds.coords and not np.allclose(_numeric(ds[coord], path, what, coord), np.asarray(expected, dtype=np.float64)):
            raise _bad(path, what, coord, f"does not match model {model.name}'s grid")
    _check_units(var, model.units[v], path, what, name)
    values = _numeric(var, path, what, name)
    if not np.all(np.isfinite(values)):
        raise _bad(path, what, name, "holds NaN or infinite values")
    return values


def _obs_std(ds, path, start: int, cycles: int) -> np.ndarray:
    if "obs_std" not in ds:
        raise _bad(path, "observations", "obs_std", "is missing")
    var = ds["obs_std"]
    std = _numeric(var, path, "observations", "obs_std")
    if var.dims == ("time", "obs"):
        std = std[start:start + cycles]
        if not np.all(np.isfinite(std) & (std > 0)):
            raise _bad(path, "observations", "obs_std", "must be finite and > 0")
        if np.any(std != std[:1]):
            raise _bad(path, "observations", "obs_std", "varies in time; one std per observation is supported")
        std = std[0]
    elif var.dims != ("obs",):
        raise _bad(path, "observations", "obs_std", f"has dims {var.dims}, expected ('obs',) or ('time', 'obs')")
    if not np.all(np.isfinite(std) & (std > 0)):
        raise _bad(path, "observations", "obs_std", "must be finite and > 0")
    if not usable_std(torch.from_numpy(np.asarray(std, dtype=np.float64))):
        raise _bad(path, "observations", "obs_std", "is out of range: its square or inverse square overflows "
                   "float64 (give stds between 1e-150 and 1e150)")
    return np.ascontiguousarray(std, dtype=np.float64)


def _obs_qc(ds, path, start: int, cycles: int) -> np.ndarray:
    var = ds["obs_qc"]
    if var.dims != ("time", "obs"):
        raise _bad(path, "observations", "obs_qc", f"has dims {var.dims}, expected ('time', 'obs')")
    qc = _numeric(var, path, "observations", "obs_qc")[start:start + cycles]
    if not np.all(np.isin(qc, np.arange(len(QC_MEANINGS.split())))):
        raise _bad(path, "observations", "obs_qc", f"holds codes outside 0..{len(QC_MEANINGS.split()) - 1} ({QC_MEANINGS})")
    return qc.astype(np.int8)


def _obs_locations(ds, path, model) -> np.ndarray:
    columns = []
    for i, name in enumerate(model.location_names):
        coord = f"obs_{name}"
        if coord not in ds:
            raise _bad(path, "observations", coord, f"is missing (model {model.name} locates observations by {', '.join(model.location_names)})")
        var = ds[coord]
        if var.dims != ("obs",):
            raise _bad(path, "observations", coord, f"has dims {var.dims}, expected ('obs',)")
        _check_units(var, model.location_units[i] if i < len(model.location_units) else "1", path, "observations", coord)
        values = _numeric(var, path, "observations", coord)
        if not np.all(np.isfinite(values)):
            raise _bad(path, "observations", coord, "holds NaN or infinite locations")
        columns.append(values)
    coords = np.stack(columns, axis=1)
    inside = model.contains(torch.from_numpy(coords)).numpy()
    if not inside.all():
        first = int(np.flatnonzero(~inside)[0])
        raise _bad(path, "observations", f"obs_{model.location_names[0]}",
                   f"places observation {first} at {coords[first].tolist()}, outside model {model.name}'s domain")
    return coords


def _obs_channels(ds, path, model, n_obs: int) -> np.ndarray:
    if "obs_variable" not in ds:
        if len(model.variables) == 1:
            return np.zeros(n_obs, dtype=np.int64)
        raise _bad(path, "observations", "obs_variable", f"is missing (model {model.name} has variables {', '.join(model.variables)})")
    names = [str(v) for v in np.asarray(ds["obs_variable"].values).reshape(-1)]
    bad = [n for n in names if n not in model.variables]
    if ds["obs_variable"].dims != ("obs",) or bad:
        raise _bad(path, "observations", "obs_variable",
                   f"names unknown variable '{bad[0] if bad else '?'}'; valid variables: {', '.join(model.variables)}")
    return np.array([model.variables.index(n) for n in names], dtype=np.int64)


def _locate(coords: np.ndarray, model, path) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid-point indices (n, 1) of on-grid sites, else the model's interpolation (n, k)."""
    grid = model.point_coords().to(torch.float64).numpy()
    lookup = {tuple(row): i for i, row in enumerate(grid.tolist())}
    index = np.array([lookup.get(tuple(row), -1) for row in coords.tolist()], dtype=np.int64)
    for i in np.flatnonzero(index < 0):  # not bit-identical: accept round-off only
        close = np.all(np.isclose(grid, coords[i], rtol=1e-9, atol=1e-9), axis=1)
        if close.any():
            index[i] = int(np.flatnonzero(close)[0])
    if (index >= 0).all():
        return torch.from_numpy(index[:, None]), torch.ones(len(index), 1, dtype=torch.float64)
    interpolation = getattr(model, "interpolation", None)
    if interpolation is None:
        first = int(np.flatnonzero(index < 0)[0])
        raise _bad(path, "observations", f"obs_{model.location_names[0]}",
                   f"places observation {first} at {coords[first].tolist()}, not a grid point of model {model.name} (which does not interpolate)")
    idx, w = interpolation(torch.from_numpy(coords))
    return torch.as_tensor(idx, dtype=torch.long), torch.as_tensor(w, dtype=torch.float64)
