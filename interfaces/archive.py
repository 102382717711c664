"""Slim copies of finished run files, small enough to commit, so that a long sweep resumes on
another machine.

A run file of a 300-cycle 32x64 job holds every cycle's truth, background and analysis fields
(tens of MB); what `compare` and `tune` read back from a finished one is its attributes (status,
summary, code version) and its per-cycle scores. A slim copy keeps exactly those: every variable
indexed by time alone, the observation sites and a time-RMS observation-error std per site (for
the plots' error level), and drops the gridded fields and per-cycle observation arrays. The
file keeps its name (the job's hash), so a restored copy is found where the run file would be,
and its code version, so a copy made by other code is rerun like any stale run file.

Only the map plots need fields: `report` draws them from full run files and leaves slim ones out.

Failure records (a diverged job's ``.failed.json``, interfaces/failures.py) are archived and
restored as they are: a few hundred bytes each, and without them a fresh machine would run every
diverging setting of a search again to learn that it diverges.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from . import failures
from .sweep import file_state

#: The attribute that marks a slim copy; its value says what was dropped.
SLIM_ATTR = "slim"


def is_slim(ds) -> bool:
    return SLIM_ATTR in ds.attrs


def has_fields(path) -> bool:
    """Whether a run file still holds its gridded fields (False for a slim copy or no file)."""
    import xarray as xr

    try:
        with xr.open_dataset(path, engine="netcdf4", decode_times=False) as ds:
            return not is_slim(ds)
    except (OSError, ValueError):
        return False


def slim_dataset(ds):
    """The slim copy of a complete run file's Dataset (see the module docstring)."""
    if ds.attrs.get("status") != "complete":
        raise ValueError("only a complete run file can be slimmed (a partial one must keep its "
                         "fields to resume)")
    import xarray as xr

    keep = [n for n, v in ds.data_vars.items() if v.dims == ("time",)]
    out = ds[keep]
    # The std becomes one value per site, the RMS over cycles (what the plots' observation-error
    # level averages), with the sites' coordinates (variable, latitude, longitude) beside it.
    if "obs_std" in ds:
        std = np.asarray(ds["obs_std"].values, dtype=float)
        rms = np.sqrt(np.nanmean(std**2, axis=0)) if std.ndim == 2 else std
        sites = {c: ds[c] for c in ds.coords if ds[c].dims == ("obs",)}
        out["obs_std"] = xr.DataArray(rms, dims=("obs",), coords=sites,
                                      attrs={**ds["obs_std"].attrs, "cell_methods": "time: root_mean_square"})
    dropped = sorted(n for n in ds.data_vars if n not in out.data_vars)
    variables = [str(n)[len("truth_"):] for n in ds.data_vars if str(n).startswith("truth_")]
    out.attrs = {**ds.attrs, SLIM_ATTR: "gridded fields and per-cycle observation arrays dropped: "
                 + ", ".join(dropped), "state_variables": ",".join(variables)}
    return out


def slim(src, dst) -> Path:
    """Write the slim copy of the complete run file ``src`` to ``dst`` (atomically). It is a
    classic netCDF file: an HDF5 (netCDF-4) one spends more on per-variable metadata than the
    few thousand numbers a slim copy holds (167 KB against 59 KB for a 200-cycle sphere run)."""
    import xarray as xr

    from .cache import write_atomic

    with xr.open_dataset(src, engine="netcdf4", decode_times=False) as ds:
        small = slim_dataset(ds).load()
    dst = Path(dst)
    write_atomic(dst, lambda tmp: small.to_netcdf(tmp, engine="netcdf4", format="NETCDF3_64BIT"))
    return dst


def slim_in_place(run_dir) -> tuple[int, int]:
    """Replace every complete run file under ``run_dir`` that still holds its fields by its slim
    copy, for run folders whose fields nobody reads (a tuning search's: tune reads the summaries
    and per-cycle scores). A 200-cycle 32x64 run file is about 50 MB and its slim copy 0.06 MB:
    one table's searches filled 17 GB before. Partial files are left whole (they resume from
    their fields). Returns (files slimmed, bytes freed)."""
    run_dir = Path(run_dir)
    count = freed = 0
    for path in sorted(run_dir.rglob("*.nc")) if run_dir.exists() else []:
        if file_state(path)[0] != "complete" or not has_fields(path):
            continue
        before = path.stat().st_size
        slim(path, path)
        count, freed = count + 1, freed + before - path.stat().st_size
    return count, freed


def sync(run_dir, archive_dir) -> list[Path]:
    """Slim every complete run file under ``run_dir`` into ``archive_dir`` (same relative path),
    unless the archive already holds a copy of it made by the same code, and copy each failure
    record that the archive lacks or holds in another version. Returns what was written."""
    run_dir, archive_dir = Path(run_dir), Path(archive_dir)
    written = []
    for src in sorted(run_dir.rglob("*.nc")) if run_dir.exists() else []:
        status, _, code = file_state(src)
        if status != "complete":
            continue
        dst = archive_dir / src.relative_to(run_dir)
        if file_state(dst)[0::2] == ("complete", code):
            continue
        written.append(slim(src, dst))
    for src in sorted(run_dir.rglob("*" + failures.SUFFIX)) if run_dir.exists() else []:
        dst = archive_dir / src.relative_to(run_dir)
        if dst.exists() and dst.read_bytes() == src.read_bytes():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        written.append(dst)
    return written


def restore(archive_dir, run_dir) -> list[Path]:
    """Copy each archived slim file (and failure record) into ``run_dir`` where no file of that
    name exists (a full run file is never replaced). Returns what was copied."""
    archive_dir, run_dir = Path(archive_dir), Path(run_dir)
    copied = []
    found = [*archive_dir.rglob("*.nc"), *archive_dir.rglob("*" + failures.SUFFIX)] if archive_dir.exists() else []
    for src in sorted(found):
        dst = run_dir / src.relative_to(archive_dir)
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            copied.append(dst)
    return copied
