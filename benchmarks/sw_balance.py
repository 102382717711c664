"""How balanced are a method's analyses on the sphere? Errors in vorticity and divergence, and the
initial height tendency, of the analyses in full `sw` run files (twins: the truth is in the file).

The shallow-water flow is near geostrophic balance: its divergence and its height tendency are
small. An analysis whose increments break that balance carries spurious divergence and starts
gravity waves, which the forecast then loses or spreads as noise. Per run file, over the scored
cycles (every ``--every``-th), area-weighted RMS of:

- the analysis and background errors in relative vorticity and in divergence (s-1);
- the analysis's divergence beside the truth's (an excess is spurious divergence);
- the height tendency dh/dt of the analysis beside the truth's (m s-1): the model's own
  tendency at the analysed state, a measure of how far from balance it starts.

Run (from the checkout that wrote the runs; the files must hold the fields, not slim copies):

    DA_HARNESS_THREADS=1 .venv/bin/python benchmarks/sw_balance.py RUN.nc [RUN.nc ...] [--every 4]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import xarray as xr

from interfaces.harness import build_model
from interfaces.io import field_name
from interfaces.registry import get_registry

COLUMNS = ("vort_err_a", "vort_err_b", "div_err_a", "div_err_b", "div_a", "div_truth", "dhdt_a", "dhdt_truth")


def balance(path: str, every: int = 4) -> dict:
    """The figures of one run file (see the module's docstring), with its method and members."""
    with xr.open_dataset(path) as ds:
        attrs = dict(ds.attrs)
        if attrs.get("model") != "sw":
            raise SystemExit(f"sw_balance: '{path}' is a run of model '{attrs.get('model')}', not sw")
        model = build_model(get_registry(), "sw", json.loads(attrs.get("model_options", "{}")), None)
        start, done = int(attrs.get("burn_in", 0)), int(attrs.get("completed_cycles", ds.sizes["time"]))

        def fields(role):
            names = [field_name(model, role, v) for v in model.variables]
            if any(n not in ds for n in names):
                raise SystemExit(f"sw_balance: '{path}' has no {role} fields (a slim copy?)")
            return torch.from_numpy(np.stack([ds[n].values[start:done:every] for n in names], 1).astype(np.float64))

        analysis, background, truth = fields("analysis"), fields("background"), fields("truth")
    dyn, area = model.dyn, model.area_weights()

    def rms(grid):
        return float((grid.pow(2) * area).mean().sqrt())

    def vort_div(x):
        spec = dyn.vort_div(x[:, 1:].to(dyn.dtype))
        return dyn.isht(spec[:, 0:1]).double(), dyn.isht(spec[:, 1:2]).double()

    def height_tendency(x):
        return dyn.isht(dyn.tendency(dyn.to_spectral(x))[:, 2:3]).double()

    (va, da), (vb, db), (vt, dt) = vort_div(analysis), vort_div(background), vort_div(truth)
    return {"file": path, "method": attrs.get("method"), "members": int(attrs.get("members", 1)),
            "cycles": len(analysis),
            "vort_err_a": rms(va - vt), "vort_err_b": rms(vb - vt), "div_err_a": rms(da - dt), "div_err_b": rms(db - dt),
            "div_a": rms(da), "div_truth": rms(dt),
            "dhdt_a": rms(height_tendency(analysis)), "dhdt_truth": rms(height_tendency(truth))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="full sw run files")
    parser.add_argument("--every", type=int, default=4, help="use every N-th scored cycle (default 4)")
    args = parser.parse_args()
    print("| method | members | cycles | " + " | ".join(COLUMNS) + " |")
    print("|---|---:|---:|" + "---:|" * len(COLUMNS))
    for path in args.runs:
        r = balance(path, args.every)
        print(f"| {r['method']} | {r['members']} | {r['cycles']} | " + " | ".join(f"{r[c]:.3g}" for c in COLUMNS) + " |")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
