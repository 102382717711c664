"""Figures for run files (the optional `plot` extra: matplotlib).

For one run: ``cycle_maps`` (truth, background, analysis and their errors for one cycle, from a
run file or from arrays) and ``rmse_vs_cycle`` (RMSE per cycle of several runs).
For a comparison (``da-harness compare`` draws these for every table): ``compare_rmse`` (RMSE per
cycle, mean over seeds with a min-max band, analysis solid and background dashed, the
observation-error level and the burn-in shaded) and ``compare_maps`` (truth, observations, and
each method's analysis and error on colour scales shared by all methods, the error scale set by
the methods that assimilate, not by the free run), and ``compare_cost`` (analysis RMSE against
seconds and forecasts per cycle, one connected series per method run at several settings).
Each returns a matplotlib Figure and saves it when ``out`` is given. Figures are drawn on the Agg
canvas directly, never through pyplot, so no global backend or figure list is touched.
"""

from __future__ import annotations

import math
import textwrap

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import UsageError

ROLES = ("truth", "background", "analysis")
#: Runs that assimilate nothing. They are drawn, but left out of the shared error colour scale:
#: their errors are ten to a hundred times a DA method's and would leave every DA panel blank.
REFERENCE_METHODS = ("free", "climatology")
LAT_LABEL, LON_LABEL = "latitude (°N)", "longitude (°E)"
#: Colours after matplotlib's ten defaults, of hues those ten lack, so that rows past the tenth are
#: not drawn in the first rows' colours (the imperfect-physics table has eleven rows, and 'C10' is
#: 'C0' again: its free run and latent 3D-Var were drawn alike).
EXTRA_COLOURS = ("navy", "darkgoldenrod", "lime", "magenta", "teal", "maroon")


def suptitle(fig, text: str, fontsize: float) -> None:
    """A figure title wrapped to the figure's width: a table's title (model, options, truth
    model, bias correction, cycles) runs past 150 characters and was cut at both edges."""
    per_line = max(40, int(fig.get_figwidth() * 72 / (0.55 * fontsize)))
    fig.suptitle(textwrap.fill(text, per_line), fontsize=fontsize)


def line_colour(i: int):
    """The colour of a plot's i-th row: 'C0'-'C9', then EXTRA_COLOURS, then hues spread by the
    golden ratio around the colour wheel (distinct from each other, if not from the first 16)."""
    if i < 10:
        return f"C{i}"
    if i - 10 < len(EXTRA_COLOURS):
        return EXTRA_COLOURS[i - 10]
    from matplotlib.colors import hsv_to_rgb

    return tuple(hsv_to_rgb(((i * 0.618034) % 1.0, 0.85, 0.75)))


def legend_label(name: str) -> str:
    """A row's name for a legend, wrapped: a reanalysis-style LO-SDA row's name is 100 characters,
    and unwrapped it squeezed the panels until their axis labels ran into each other."""
    return textwrap.fill(name, 44, subsequent_indent="  ")


def row_colours(names) -> dict[str, Any]:
    """One colour per table row, by its place in the table: passed to every figure of a table, so
    that a row has the same colour in each (the cost figure once drew its points by method, the
    RMSE figure by row, and the same colour meant EnSF in one and LO-SDA in the other)."""
    return {name: line_colour(i) for i, name in enumerate(dict.fromkeys(names))}


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
    lat_lon = lat is not None
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
        lat_lon = True
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
        ax.set_xlabel(LON_LABEL if lat_lon else "grid index")
        ax.set_ylabel(LAT_LABEL if lat_lon else "grid index")
        fig.colorbar(mesh, ax=ax, label=f"{variable}{' error' if 'error' in name else ''}" + (f" ({units})" if units else ""))
    if obs is not None:
        for ax in (axes[0, 0], axes[1, 0], axes[1, 1]):
            _mark_sites(ax, obs[1], obs[0], label="observation sites" if ax is axes[0, 0] else None)
        axes[0, 0].legend(loc="lower left", fontsize="small")
    axes[1, 2].axis("off")
    suptitle(fig, title or f"{variable}, cycle {cycle}", fontsize=12)
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
        ax.plot(cycles, ds[name].values, color=line_colour(i), label=f"{label} analysis")
        units = ds[name].attrs.get("units", units)
        bname = name.replace("analysis", "background")
        if background and bname in ds:
            ax.plot(cycles, ds[bname].values, color=line_colour(i), ls="--", lw=0.8, label=f"{label} background")
    ax.set_xlabel("cycle")
    ax.set_ylabel(f"RMSE ({units})" if units and units != "1" else "RMSE / climatological std")
    ax.set_yscale("log")
    ax.legend(fontsize="small")
    ax.set_title(title or ("RMSE" + (f" of {variable}" if variable else "")))
    if out is not None:
        fig.savefig(out, dpi=90)
    return fig


# --- comparison figures -------------------------------------------------------------------------
def _mark_sites(ax, x, y, label=None) -> None:
    """Observation sites as small open circles, without widening the axes (sites past the last
    grid column stay off the map)."""
    limits = ax.get_xlim(), ax.get_ylim()
    ax.scatter(x, y, s=7, facecolors="none", edgecolors="k", linewidths=0.5, label=label)
    ax.set(xlim=limits[0], ylim=limits[1])


def _variables(ds) -> list[str]:
    """The state variables of a run file in file order: ['h', 'u', 'v'] on the sphere, [] when
    the model has one unnamed variable (fields 'truth', 'analysis')."""
    if "state_variables" in ds.attrs:  # a slim copy has no fields to read them from (interfaces/archive.py)
        return [v for v in str(ds.attrs["state_variables"]).split(",") if v]
    return [str(n)[len("truth_"):] for n in ds.data_vars if str(n).startswith("truth_")]


def obs_error_level(ds, variable: str | None = None) -> float | None:
    """RMS observation-error std of ``variable`` (all observations when None), in the state's
    units, or None where it is not comparable with an RMSE: the overall score of a
    multi-variable model (normalised), or observations through a nonlinear operator."""
    if "obs_std" not in ds or str(ds.attrs.get("obs", "")).startswith("arctan"):
        return None
    std = np.asarray(ds["obs_std"].values, dtype=float)
    if variable is None:
        if _variables(ds):
            return None
    elif "obs_variable" in ds.coords or "obs_variable" in ds:
        keep = np.asarray(ds["obs_variable"].values).astype(str) == variable
        std = std[..., keep]
    if std.size == 0 or not np.isfinite(std).any():
        return None
    return float(np.sqrt(np.nanmean(std**2)))


def _score_label(ds, variable: str | None) -> str:
    name = "analysis_rmse" if variable is None else f"analysis_rmse_{variable}"
    units = str(ds[name].attrs.get("units", ""))
    if variable is None:
        return "RMSE / climatological std" if _variables(ds) else "RMSE" + ("" if units in ("", "1") else f" ({units})")
    return f"RMSE of {variable}" + ("" if units in ("", "1") else f" ({units})")


def _stack(datasets, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(cycles, values seeds x cycles) of one per-cycle score, cut to the shortest run."""
    n = min(d.sizes["time"] for d in datasets)
    first = datasets[0]
    cycles = np.asarray(first["cycle"].values[:n]) if "cycle" in first else np.arange(n)
    return cycles, np.stack([np.asarray(d[name].values[:n], dtype=float) for d in datasets])


def compare_rmse(runs: Mapping[str, Any], out=None, title: str | None = None, burn_in: int | None = None,
                 colours: Mapping[str, Any] | None = None):
    """RMSE per cycle for several methods, each over several seeds.

    ``runs`` maps a method to a list of run files or Datasets (one per seed; the seeds should be
    the same for every method). One panel for the overall score and, on multi-variable models,
    one per variable in its units. Each method: the mean over seeds of the analysis RMSE (solid),
    its min-max band over seeds (shaded, when there are several), and the mean background RMSE
    (dashed). A dotted line marks the observation-error std where it is comparable, and the
    burn-in cycles (left out of every score; ``burn_in`` or the files' attribute) are shaded.
    ``colours`` maps a method to its colour (``row_colours`` of the table's rows, shared with the
    table's other figures); by default each method's place in ``runs``.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda y, _: f"{y:g}")
    sparse = FuncFormatter(lambda y, _: f"{y:g}" if f"{y:.0e}"[0] in "235" else "")  # minor ticks: 2, 3, 5 only

    loaded = {m: [_open(s) for s in (srcs if isinstance(srcs, (list, tuple)) else [srcs])] for m, srcs in runs.items()}
    loaded = {m: ds for m, ds in loaded.items() if ds}
    if not loaded:
        raise UsageError("compare_rmse needs at least one run file")
    first = next(iter(loaded.values()))[0]
    for method, datasets in loaded.items():
        if any("analysis_rmse" not in d for d in datasets):
            raise UsageError(f"a run file of method '{method}' has no 'analysis_rmse'")
    panels = [None] + [v for v in _variables(first) if f"analysis_rmse_{v}" in first]
    if burn_in is None:
        burn_in = int(first.attrs.get("burn_in", 0) or 0)
    seeds = sorted({len(d) for d in loaded.values()})
    colour = {**row_colours(loaded), **(colours or {})}

    ncols = 1 if len(panels) == 1 else 2
    nrows = -(-len(panels) // ncols)
    fig = _figure(figsize=(5.2 * ncols + 2.6, 3.4 * nrows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes[len(panels):]:
        ax.axis("off")
    any_band = any_obs = False
    for ax, variable in zip(axes, panels):
        name = "analysis_rmse" if variable is None else f"analysis_rmse_{variable}"
        bname = name.replace("analysis", "background", 1)
        for method, datasets in loaded.items():
            cycles, values = _stack(datasets, name)
            ax.plot(cycles, values.mean(0), color=colour[method], lw=1.4)
            if values.shape[0] > 1:
                ax.fill_between(cycles, values.min(0), values.max(0), color=colour[method], alpha=0.18, lw=0)
                any_band = True
            if all(bname in d for d in datasets):
                ax.plot(cycles, _stack(datasets, bname)[1].mean(0), color=colour[method], ls="--", lw=0.9)
        level = obs_error_level(first, variable)
        if level is not None:
            ax.axhline(level, color="k", ls=":", lw=1.2)
            any_obs = True
        if burn_in:
            ax.axvspan(-0.5, burn_in - 0.5, color="0.88", zorder=0, lw=0)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)  # 0.6, not 6 x 10^-1
        ax.yaxis.set_minor_formatter(sparse)
        ax.set_xlabel("cycle")
        ax.set_ylabel(_score_label(first, variable))
        ax.set_title("overall" if variable is None and panels[1:] else (variable or ""), fontsize=10)

    seed_text = "/".join(map(str, seeds)) + " seed" + ("s" if seeds != [1] else "")
    handles = [Line2D([], [], color=colour[m], lw=2, label=legend_label(m)) for m in loaded]
    handles += [Line2D([], [], color="0.3", lw=1.4, label=f"analysis (mean over {seed_text})"),
                Line2D([], [], color="0.3", ls="--", lw=0.9, label="background (mean)")]
    if any_band:
        handles.append(Patch(color="C0", alpha=0.25, label="min-max over seeds"))
    if any_obs:
        handles.append(Line2D([], [], color="k", ls=":", lw=1.2, label="observation-error std"))
    if burn_in:
        handles.append(Patch(color="0.88", label=f"burn-in ({burn_in} cycles, not scored)"))
    fig.legend(handles=handles, loc="outside right center", fontsize="small", frameon=False)
    suptitle(fig, title or "RMSE per cycle", fontsize=10)
    if out is not None:
        fig.savefig(out, dpi=100)
    return fig


#: A method whose RMS error at the drawn cycle exceeds this many times the best method's does not
#: set the error scale (it saturates, as the free run does): EnSF at 5 % coverage (326 m in h
#: against the LETKF's 13 m) set it to +-1,300 m and left every other method's error map white.
SCALE_SETTERS_WITHIN = 10.0


def error_limit(errors: Mapping[str, np.ndarray], reference=REFERENCE_METHODS) -> float:
    """Half-range of the shared error colour scale: the largest absolute error of the methods
    that assimilate (all methods when every one is a reference run such as ``free``), among those
    whose RMS error is within SCALE_SETTERS_WITHIN times the smallest positive one."""
    shown = {m: e for m, e in errors.items() if m not in reference} or dict(errors)
    rms = {m: float(np.sqrt(np.nanmean(np.square(e)))) for m, e in shown.items() if np.isfinite(e).any()}
    best = min((r for r in rms.values() if r > 0), default=0.0)
    finite = [float(np.nanmax(np.abs(shown[m]))) for m, r in rms.items() if not best or r <= SCALE_SETTERS_WITHIN * best]
    return max(finite, default=0.0) or 1.0


def _cycle_fields(ds, variable: str | None, cycle: int) -> dict[str, Any]:
    suffix = f"_{variable}" if variable else ""
    n = ds.sizes["time"]
    if not -n <= cycle < n:
        raise UsageError(f"cycle {cycle} is outside the run's {n} cycles")
    for role in ("truth", "analysis"):
        if f"{role}{suffix}" not in ds:
            raise UsageError(f"run file has no '{role}{suffix}'; variables: {', '.join(_variables(ds)) or '(one, unnamed)'}")
    truth = np.asarray(ds[f"truth{suffix}"].isel(time=cycle).values, dtype=float)
    analysis = np.asarray(ds[f"analysis{suffix}"].isel(time=cycle).values, dtype=float)
    out = {"truth": truth, "analysis": analysis, "units": str(ds[f"truth{suffix}"].attrs.get("units", "")),
           "cycle": int(ds["cycle"].values[cycle]) if "cycle" in ds else cycle % n,
           "dims": ds[f"truth{suffix}"].dims[1:], "sites": None, "obs": None}
    out["coords"] = [np.asarray(ds[d].values) for d in out["dims"]]
    if "obs_value" in ds:
        keep = np.ones(ds.sizes["obs"], dtype=bool)
        if variable and "obs_variable" in ds:
            keep &= np.asarray(ds["obs_variable"].values).astype(str) == variable
        values = np.asarray(ds["obs_value"].isel(time=cycle).values, dtype=float)
        used = keep & np.isfinite(values)
        if "obs_qc" in ds:
            used &= np.asarray(ds["obs_qc"].isel(time=cycle).values) == 0
        if "obs_lat" in ds and "obs_lon" in ds:  # radians in run files
            out["sites"] = (np.degrees(np.asarray(ds["obs_lon"].values)[keep]), np.degrees(np.asarray(ds["obs_lat"].values)[keep]))
            out["obs"] = (np.degrees(np.asarray(ds["obs_lon"].values)[used]), np.degrees(np.asarray(ds["obs_lat"].values)[used]), values[used])
        elif "obs_index" in ds:
            index = np.asarray(ds["obs_index"].values)
            out["sites"] = (index[keep], None)
            out["obs"] = (index[used], None, values[used])
    return out


def compare_maps(runs: Mapping[str, Any], out=None, cycle: int = -1, variable: str | None = None,
                 title: str | None = None, reference=REFERENCE_METHODS):
    """One cycle of several methods: the truth and the observations on top, then one row per
    method with its analysis and its analysis error. Fields share the truth's colour scale; errors
    share one symmetric scale set by the methods that assimilate (``error_limit``), so a free
    run's larger errors, or a failing method's, saturate (arrows on the colour bar) instead of
    blanking the other panels.
    Observation sites are circled on the truth and error maps. ``runs`` maps a method to one run
    file or Dataset (the same seed for all); ``variable`` defaults to the file's first one (h on
    the sphere). One-dimensional states (Lorenz-96) are drawn as curves on shared y-limits."""
    loaded = {m: _open(s[0] if isinstance(s, (list, tuple)) else s) for m, s in runs.items()}
    if not loaded:
        raise UsageError("compare_maps needs at least one run file")
    first = next(iter(loaded.values()))
    if variable is None:
        variable = (_variables(first) or [None])[0]
    fields = {m: _cycle_fields(ds, variable, cycle) for m, ds in loaded.items()}
    top = next(iter(fields.values()))
    errors = {m: f["analysis"] - f["truth"] for m, f in fields.items()}
    emax = error_limit(errors, reference)
    lo, hi = float(np.nanmin(top["truth"])), float(np.nanmax(top["truth"]))
    name = variable or "x"
    unit = f" ({top['units']})" if top["units"] not in ("", "1") else ""
    n = len(fields)
    two_d = top["truth"].ndim == 2
    fig = _figure(figsize=(11.5, 2.5 * (n + 1) + 0.4), layout="constrained")
    axes = fig.subplots(n + 1, 2, squeeze=False)

    def label(ax, row):
        if two_d:
            lat_lon = top["dims"] == ("lat", "lon")
            ax.set_ylabel(LAT_LABEL if lat_lon else top["dims"][0], fontsize=8)
            if row == n:
                ax.set_xlabel(LON_LABEL if lat_lon else top["dims"][1], fontsize=8)
        else:
            ax.set_ylabel(f"{name}{unit}", fontsize=8)
            if row == n:
                ax.set_xlabel("grid index", fontsize=8)
        ax.tick_params(labelsize=7)

    if two_d:
        lat, lon = top["coords"]
        field_mesh = axes[0, 0].pcolormesh(lon, lat, top["truth"], cmap="viridis", vmin=lo, vmax=hi, shading="nearest")
        axes[0, 0].set_title(f"truth, {name}", fontsize=9)
        axes[0, 1].set(xlim=axes[0, 0].get_xlim(), ylim=axes[0, 0].get_ylim(), facecolor="0.93")
        if top["obs"] is not None:
            x, y, v = top["obs"]
            axes[0, 1].scatter(x, y, c=v, cmap="viridis", vmin=lo, vmax=hi, s=14, edgecolors="k", linewidths=0.3)
            _mark_sites(axes[0, 0], *top["sites"])
        axes[0, 1].set_title(f"observations used ({0 if top['obs'] is None else len(top['obs'][2])}), field colours", fontsize=9)
        for row, (method, f) in enumerate(fields.items(), start=1):
            axes[row, 0].pcolormesh(lon, lat, f["analysis"], cmap="viridis", vmin=lo, vmax=hi, shading="nearest")
            err_mesh = axes[row, 1].pcolormesh(lon, lat, errors[method], cmap="RdBu_r", vmin=-emax, vmax=emax, shading="nearest")
            if f["sites"] is not None:
                _mark_sites(axes[row, 1], *f["sites"])
        fig.colorbar(field_mesh, ax=list(axes[:, 0]), label=f"{name}{unit}", extend="both", shrink=0.6)
        fig.colorbar(err_mesh, ax=list(axes[1:, 1]), label=f"{name} analysis − truth{unit}", extend="both", shrink=0.6)
    else:
        x = np.arange(top["truth"].shape[0])
        pad = 0.05 * (hi - lo)
        axes[0, 0].plot(x, top["truth"], color="k", lw=1, label="truth")
        if top["obs"] is not None:
            axes[0, 0].plot(top["obs"][0], top["obs"][2], "o", ms=3, mfc="none", mec="C3", label="observations")
        axes[0, 0].set_title(f"truth and observations, {name}", fontsize=9)
        axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
        axes[0, 1].axis("off")
        axes[0, 1].text(0, 0.9, "Left: each method's analysis (blue) over the truth (grey dashed).\n"
                        "Right: analysis − truth on one y-scale set by the methods that\nassimilate; "
                        "ticks on the zero line mark the observed sites.", fontsize=8, va="top",
                        transform=axes[0, 1].transAxes)
        for row, (method, f) in enumerate(fields.items(), start=1):
            axes[row, 0].plot(x, f["truth"], color="0.6", lw=1, ls="--", label="truth")
            axes[row, 0].plot(x, f["analysis"], color="C0", lw=1.2, label="analysis")
            axes[row, 1].axhline(0, color="0.6", lw=0.8)
            axes[row, 1].plot(x, errors[method], color="C3", lw=1.2)
            if f["sites"] is not None:  # observed sites as ticks on the zero line
                axes[row, 1].plot(f["sites"][0], np.zeros(len(f["sites"][0])), "|", color="k", ms=6)
            axes[row, 0].set_ylim(lo - pad, hi + pad)
            axes[row, 1].set_ylim(-1.05 * emax, 1.05 * emax)
        axes[0, 0].set_ylim(lo - pad, hi + pad)
    for row, (method, f) in enumerate(fields.items(), start=1):
        rms = float(np.sqrt(np.nanmean(errors[method] ** 2)))
        ref = " (no DA)" if method in reference else ""
        axes[row, 0].set_title(f"{method}{ref} analysis, {name}", fontsize=9)
        axes[row, 1].set_title(f"{method}{ref} error, rms {rms:.3g} {top['units']}".rstrip().removesuffix(" 1") + (", saturated" if np.nanmax(np.abs(errors[method])) > emax else ""),
                               fontsize=9)
    for row in range(n + 1):
        for col in range(2):
            if axes[row, col].axison:
                label(axes[row, col], row)
    suptitle(fig, title or f"{name}, cycle {top['cycle']}", fontsize=10)
    if out is not None:
        fig.savefig(out, dpi=90)
    return fig


#: The cost axes of ``compare_cost``: (row key, axis label).
COST_AXES = (("seconds_per_cycle", "seconds per cycle (wall time)"),
             ("forecasts_per_cycle", "forecasts per cycle (member integrations)"))


def compare_cost(rows, out=None, title: str | None = None, colours: Mapping[str, Any] | None = None):
    """Accuracy for the compute spent: analysis RMSE (mean over seeds, 95 % interval as error
    bars) against seconds per cycle and, in a second panel, against forecasts per cycle, both on
    log axes. ``rows`` are a comparison table's rows (interfaces.aggregate.aggregate): one point
    each, in its row's colour (``colours``, as in the table's other figures; by default its place
    in ``rows``); the rows of one method run at several settings (``variant_of``, ``variant``) are
    joined by a grey line in order of cost. The legend, right of the panels, names each row (its
    settings included). Rows without a finite RMSE or a positive cost are left out of that panel."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    sparse = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "235" else "")  # minor ticks: 2, 3, 5 only
    rows = list(rows)
    if not rows:
        raise UsageError("compare_cost needs at least one table row")
    fig = _figure(figsize=(12, 4.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    methods = list(dict.fromkeys(r.get("variant_of", r["method"]) for r in rows))
    colour = {**row_colours(r["method"] for r in rows), **(colours or {})}
    drawn = set()  # rows drawn in either panel, for the legend

    def finite(v):
        return v is not None and np.isfinite(v)

    lows, highs = [], []  # the drawn points' interval ends, for the shared RMSE axis
    for ax, (key, axis_label) in zip(axes, COST_AXES):
        xs = []
        for method in methods:
            points = sorted(((float(r[key]), r) for r in rows if r.get("variant_of", r["method"]) == method
                             and finite(r.get(key)) and r[key] > 0 and finite(r.get("analysis_rmse"))),
                            key=lambda p: p[0])
            if not points:
                continue
            x = [p[0] for p in points]
            y = [p[1]["analysis_rmse"] for p in points]
            err = [p[1].get("analysis_rmse_ci95") if finite(p[1].get("analysis_rmse_ci95")) else 0.0 for p in points]
            # The series, in grey: its points may have several colours. Found by method (gid).
            ax.plot(x, y, "-", color="0.6", lw=1.0, zorder=1, gid=method)
            for xi, yi, e, (_, r) in zip(x, y, err, points):
                ax.errorbar([xi], [yi], yerr=[e], fmt="o", color=colour[r["method"]], ms=5, capsize=3,
                            label=r["method"], zorder=2)
                drawn.add(r["method"])
            xs += x
            lows += [(yi, yi - e) for yi, e in zip(y, err)]
            highs += [(yi, yi + e) for yi, e in zip(y, err)]
        ax.set_xscale("log")
        ax.set_yscale("log")
        if xs:  # explicit, so that one cost for every row (all deterministic) is not an empty range
            ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
        ax.xaxis.set_major_formatter(plain)  # 0.002 s, not 2 x 10^-3
        # Minor labels (2, 3, 5 within a decade) only when the axis spans few decades: over many
        # they crowd into one another.
        span = math.log10(ax.get_xlim()[1] / ax.get_xlim()[0]) if xs else 0.0
        ax.xaxis.set_minor_formatter(sparse if span <= 2.5 else FuncFormatter(lambda v, _: ""))
        ax.set_xlabel(axis_label)
        ax.grid(True, which="major", lw=0.4, color="0.85")
    if lows:
        # Interval ends within a factor 3 of the points: an interval reaching below zero has no end
        # on a log axis, and one huge interval must not squash the points into a line.
        bottom = min(max(lo, y / 3) if lo > 0 else y / 3 for y, lo in lows)
        top = max(min(hi, y * 3) for y, hi in highs)
        axes[0].set_ylim(bottom / 1.1, top * 1.1)
    axes[0].yaxis.set_major_formatter(plain)
    axes[0].yaxis.set_minor_formatter(sparse)
    axes[0].set_ylabel("analysis RMSE (mean over seeds, 95 % interval)")
    handles = [Line2D([], [], color=colour[r["method"]], marker="o", ls="", label=legend_label(r["method"]))
               for r in rows if r["method"] in drawn]
    # Outside the panels, as in the RMSE figure: rows' names (settings included) are long, and
    # labels beside the points ran into each other and over the axis label.
    fig.legend(handles=handles, loc="outside right center", fontsize="small", frameon=False)
    suptitle(fig, title or "analysis RMSE against cost", fontsize=10)
    if out is not None:
        fig.savefig(out, dpi=100)
    return fig
