"""Figures for runs on the sphere (the optional `plot` extra: matplotlib).

``cycle_maps``: truth, background, analysis and their errors for one cycle, from a run file
(path or xarray Dataset) or from arrays. ``rmse_vs_cycle``: analysis (and background) RMSE per
cycle for several runs. Both return a matplotlib Figure and save it when ``out`` is given.
Figures are drawn on the Agg canvas directly, never through pyplot, so no global backend is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import UsageError

ROLES = ("truth", "background", "analysis")


def _figure(**kwargs):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UsageError("plots need matplotlib: pip install 'da-harness[plot]'") from exc
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _open(source):
    import xarray as xr

    if isinstance(source, (str, Path)):
        with xr.open_dataset(source) as ds:
            return ds.load()
    return source


def _fields_from_run(ds, cycle: int, variable: str) -> tuple[dict, np.ndarray, np.ndarray, str, Any, int]:
    names = {role: f"{role}_{variable}" for role in ROLES}
    missing = [n for n in names.values() if n not in ds]
    if missing:
        have = sorted({str(v).split("_", 1)[1] for v in ds.data_vars if str(v).startswith("truth_")})
        raise UsageError(f"run file has no '{missing[0]}'; variables on the sphere: {', '.join(have) or '(none)'}")
    n = ds.sizes["time"]
    if not -n <= cycle < n:
        raise UsageError(f"cycle {cycle} is outside the run's {n} cycles")
    fields = {role: np.asarray(ds[name].isel(time=cycle).values) for role, name in names.items()}
    label = int(ds["cycle"].values[cycle]) if "cycle" in ds else cycle % n
    units = ds[names["truth"]].attrs.get("units", "")
    obs = None
    if "obs_lat" in ds and "obs_lon" in ds:
        keep = np.asarray(ds["obs_variable"].values).astype(str) == variable if "obs_variable" in ds else slice(None)
        obs = (np.degrees(np.asarray(ds["obs_lat"].values)[keep]), np.degrees(np.asarray(ds["obs_lon"].values)[keep]))
    return fields, np.asarray(ds["lat"].values), np.asarray(ds["lon"].values), units, obs, label


def cycle_maps(source, cycle: int = -1, variable: str = "h", out=None, lat=None, lon=None,
               units: str = "", title: str | None = None):
    """Maps of truth, background and analysis (one colour scale) and of the background and
    analysis errors (a symmetric diverging scale) for one cycle.

    ``source``: a run file path or Dataset (fields ``truth_VAR``, ``background_VAR``,
    ``analysis_VAR`` shaped (time, lat, lon); observation sites are overlaid when present), or
    a mapping {"truth", "background", "analysis"} of 2-D (lat, lon) arrays, with ``lat``/``lon``
    in degrees (grid indices when omitted).
    """
    obs = None
    if isinstance(source, Mapping) and not hasattr(source, "data_vars"):  # a Dataset is a Mapping too
        missing = [r for r in ROLES if r not in source]
        if missing:
            raise UsageError(f"cycle_maps needs arrays for {', '.join(ROLES)}; missing {', '.join(missing)}")
        fields = {r: np.asarray(source[r], dtype=float) for r in ROLES}
        ny, nx = fields["truth"].shape
        lat = np.arange(ny)[::-1] if lat is None else np.asarray(lat)
        lon = np.arange(nx) if lon is None else np.asarray(lon)
    else:
        fields, lat, lon, units, obs, cycle = _fields_from_run(_open(source), cycle, variable)
    errors = {f"{r} error": fields[r] - fields["truth"] for r in ("background", "analysis")}
    lo = min(float(np.nanmin(f)) for f in fields.values())
    hi = max(float(np.nanmax(f)) for f in fields.values())
    emax = max(float(np.nanmax(np.abs(e))) for e in errors.values()) or 1.0

    fig = _figure(figsize=(13, 6.5), layout="constrained")
    axes = fig.subplots(2, 3)
    panels = [(r, fields[r], "viridis", lo, hi) for r in ROLES]
    panels += [(name, e, "RdBu_r", -emax, emax) for name, e in errors.items()]
    for ax, (name, data, cmap, vmin, vmax) in zip(axes.flat, panels):
        mesh = ax.pcolormesh(lon, lat, data, cmap=cmap, vmin=vmin, vmax=vmax, shading="nearest")
        rms = float(np.sqrt(np.nanmean(data**2))) if "error" in name else None
        ax.set_title(name + (f" (rms {rms:.3g})" if rms is not None else ""))
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        fig.colorbar(mesh, ax=ax, label=units)
    if obs is not None:
        limits = axes[0, 0].get_xlim(), axes[0, 0].get_ylim()
        axes[0, 0].scatter(obs[1], obs[0], s=4, c="w", edgecolors="k", linewidths=0.3, label="observations")
        axes[0, 0].set(xlim=limits[0], ylim=limits[1])  # sites past the last column stay off
        axes[0, 0].legend(loc="lower left", fontsize="small")
    axes[1, 2].axis("off")
    fig.suptitle(title or f"{variable}, cycle {cycle}")
    if out is not None:
        fig.savefig(out, dpi=90)
    return fig


def rmse_vs_cycle(runs, variable: str | None = None, out=None, background: bool = False,
                  title: str | None = None):
    """Analysis RMSE per cycle for several runs: ``runs`` maps a label to a run file path or
    Dataset. ``variable``: one variable's area-weighted RMSE (``analysis_rmse_VAR``), or None
    for the overall score normalised by climatological std (``analysis_rmse``)."""
    fig = _figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    name = "analysis_rmse" if variable is None else f"analysis_rmse_{variable}"
    units = ""
    for i, (label, source) in enumerate(runs.items()):
        ds = _open(source)
        if name not in ds:
            raise UsageError(f"run '{label}' has no '{name}'")
        cycles = np.asarray(ds["cycle"].values) if "cycle" in ds else np.arange(ds.sizes["time"])
        ax.plot(cycles, ds[name].values, color=f"C{i}", label=f"{label} analysis")
        units = ds[name].attrs.get("units", units)
        bname = name.replace("analysis", "background")
        if background and bname in ds:
            ax.plot(cycles, ds[bname].values, color=f"C{i}", ls="--", lw=0.8, label=f"{label} background")
    ax.set_xlabel("cycle")
    ax.set_ylabel(f"RMSE ({units})" if units and units != "1" else "RMSE / climatological std")
    ax.set_yscale("log")
    ax.legend(fontsize="small")
    ax.set_title(title or ("RMSE" + (f" of {variable}" if variable else "")))
    if out is not None:
        fig.savefig(out, dpi=90)
    return fig
