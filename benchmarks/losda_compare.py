"""LO-SDA against its rivals on one testbed: analysis RMSE per method and seed, cycle times, the
ratio of losda's cycle time to l3dvar's, and the trained prior's report (training seconds,
reconstruction RMSE per variable). Writes a markdown table.

    python benchmarks/losda_compare.py --model lorenz96 --obs every:2 --cycles 300 --burn-in 50 \
        --methods free,3dvar,enkf,l3dvar,dps,losda --out benchmarks/results/losda_l96.md
    python benchmarks/losda_compare.py --model sw --obs random:0.05 --cycles 60 --burn-in 20 \
        --methods free,3dvar,l3dvar,dps,losda --out benchmarks/results/losda_sw.md

Train first (``da-harness train --model M --method losda``) so the table's cycle times are not
mixed with training; the prior's own report is read from the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

from interfaces.harness import Experiment, run_experiment
from interfaces.registry import get_registry

ENSEMBLE = {"enkf": 40, "letkf": 40}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lorenz96")
    p.add_argument("--obs", default="every:2")
    p.add_argument("--obs-std", default=None)
    p.add_argument("--cycles", type=int, default=300)
    p.add_argument("--burn-in", type=int, default=50)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default="free,3dvar,enkf,l3dvar,dps,losda")
    p.add_argument("--set", action="append", default=[], help="method option, key=value, given to each method that declares it")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    latent_opts = dict(s.split("=", 1) for s in a.set)
    rows, report = [], None
    for method in a.methods.split(","):
        for seed in [int(s) for s in a.seeds.split(",")]:
            declared = get_registry().assimilator(method).factory.defaults
            opts = {k: v for k, v in latent_opts.items() if k in declared}
            t0 = time.perf_counter()
            res = run_experiment(Experiment(model=a.model, method=method, obs=a.obs, obs_std=a.obs_std, cycles=a.cycles,
                                            burn_in=a.burn_in, members=ENSEMBLE.get(method, 1), seed=seed,
                                            method_options=opts, cache_dir=a.cache_dir))
            s = res.summary
            row = {"method": method, "seed": seed, "analysis_rmse": s["analysis_rmse"], "background_rmse": s["background_rmse"],
                   "seconds_per_cycle": s["seconds_per_cycle"], "wall": time.perf_counter() - t0}
            row.update({k: v for k, v in s.items() if k.startswith("analysis_rmse_")})
            rows.append(row)
            print(json.dumps(row), flush=True)
            if method in ("losda", "dps", "l3dvar") and report is None:
                report = getattr(res.setup.method.prior, "report", None)
    text = table(a, rows, report)
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text)


def table(a, rows, report) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    seeds = sorted({r["seed"] for r in rows})
    variables = sorted({k[len("analysis_rmse_"):] for r in rows for k in r if k.startswith("analysis_rmse_")})
    lines = [f"# LO-SDA comparison: {a.model}, obs {a.obs}, {a.cycles} cycles ({a.burn_in} burn-in)", "",
             f"Command: `python benchmarks/losda_compare.py {' '.join(sys.argv[1:])}`", "",
             f"Machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"load average at the end {os.getloadavg()[0]:.1f} (timings on a shared machine)", "",
             "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | " + "".join(f"{v} | " for v in variables)
             + "s/cycle |",
             "|---" * (len(seeds) + 3 + len(variables)) + "|"]
    cycle = {}
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        by_seed = {r["seed"]: r["analysis_rmse"] for r in rs}
        mean = statistics.fmean(by_seed.values())
        cycle[m] = statistics.fmean(r["seconds_per_cycle"] for r in rs)
        per_var = "".join(f"{statistics.fmean(r[f'analysis_rmse_{v}'] for r in rs):.4g} | " for v in variables)
        lines.append(f"| {m} | " + " | ".join(f"{by_seed.get(s, float('nan')):.4g}" for s in seeds)
                     + f" | **{mean:.4g}** | {per_var}{cycle[m]:.3g} |")
    lines.append("")
    if variables:
        lines.append("The seed and mean columns are the harness's combined analysis RMSE (each variable's "
                     "area-weighted RMSE divided by its climatological std, then combined); the per-variable "
                     "columns are in physical units.")
    if "losda" in cycle and "l3dvar" in cycle:
        lines.append(f"\nlosda / l3dvar cycle-time ratio: {cycle['losda'] / cycle['l3dvar']:.1f}")
    if report:
        keep = {k: report[k] for k in ("train_seconds", "data_seconds", "vae_seconds", "denoiser_seconds",
                                       "reconstruction_rmse", "sigma_data", "pairs", "denoiser_val_loss",
                                       "checkpoint") if k in report}
        lines.append("\nTrained prior (from its checkpoint): `" + json.dumps(keep, default=str) + "`")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
