"""Lorenz-96 accuracy of the classical baselines (issue 3), through the harness.

Standard setup (Sakov & Oke 2008): 40 variables all observed, R = I, 1100 cycles of which the
first 100 are burn-in, 3 seeds; enkf N = 40, letkf N = 20, 3dvar one member. Then sparse
(every:2, random:0.5) and nonlinear (arctan) observations with every method against `free`.

    .venv/bin/python benchmarks/l96_baselines.py            # writes benchmarks/results/l96_baselines.*
    .venv/bin/python benchmarks/l96_baselines.py --quick    # 300 cycles, 1 seed (a smoke run)

One row is one `da-harness run`, e.g.
    da-harness run --model lorenz96 --method enkf --cycles 1100 --burn-in 100 --seed 0 --json
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path

import torch

from interfaces.harness import Experiment, run_experiment

RESULTS = Path(__file__).parent / "results"
#: (method, options, label); members come from each method's preferred size.
METHODS = [
    ("free", {}, "free"),
    ("3dvar", {}, "3dvar"),
    ("enkf", {}, "enkf (etkf)"),
    ("enkf", {"variant": "stochastic"}, "enkf stochastic"),
    ("letkf", {}, "letkf"),
]
TARGETS = {"3dvar": 0.45, "enkf (etkf)": 0.21, "letkf": 0.22}
PUBLISHED = {"3dvar": "0.41", "enkf (etkf)": "0.18-0.20", "letkf": "0.22"}
OBS = ["all", "every:2", "random:0.5", "arctan+all"]


def command(method, options, obs, cycles, burn_in, seed):
    sets = "".join(f" --set {k}={v}" for k, v in options.items())
    return (f"da-harness run --model lorenz96 --method {method} --obs {obs} --cycles {cycles} "
            f"--burn-in {burn_in} --seed {seed}{sets} --json")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small problems: one thread is fastest and timing-stable
    cycles, burn_in, seeds = (300, 100, 1) if args.quick else (1100, 100, args.seeds)

    rows = []
    for obs in OBS:
        for method, options, label in METHODS:
            for seed in range(seeds):
                t0 = time.perf_counter()
                s = run_experiment(Experiment(model="lorenz96", method=method, obs=obs, cycles=cycles,
                                              burn_in=burn_in, seed=seed, method_options=dict(options))).summary
                rows.append({
                    "obs": obs, "method": label, "seed": seed, "members": s["members"],
                    "analysis_rmse": s["analysis_rmse"], "background_rmse": s["background_rmse"],
                    "spread": s.get("spread", float("nan")),
                    "iterations": s.get("diag_iterations", float("nan")),
                    "seconds_per_cycle": s["seconds_per_cycle"], "wall_s": time.perf_counter() - t0,
                    "command": command(method, options, obs, cycles, burn_in, seed),
                })
                print(f"{obs:11s} {label:16s} seed {seed}: analysis RMSE {s['analysis_rmse']:.4f}", flush=True)

    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"l96_baselines{suffix}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (RESULTS / f"l96_baselines{suffix}.json").write_text(json.dumps(rows, indent=1))
    (RESULTS / f"l96_baselines{suffix}.md").write_text(report(rows, cycles, burn_in, seeds))
    print((RESULTS / f"l96_baselines{suffix}.md").read_text())


def _stats(rows, key):
    vals = [r[key] for r in rows]
    mean = statistics.fmean(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return mean, sd, vals


def report(rows, cycles, burn_in, seeds):
    out = [
        "# Lorenz-96 baselines",
        "",
        f"Written by `benchmarks/l96_baselines.py` ({cycles} cycles, the first {burn_in} burn-in, "
        f"seeds 0-{seeds - 1}; F = 8, dt = 0.05, one RK4 step per cycle; R = I for linear "
        "observations, 0.05 rad for arctan ones). Reproduce with",
        "",
        "    .venv/bin/python benchmarks/l96_baselines.py",
        "",
        "or one row with e.g. `" + command("enkf", {}, "all", cycles, burn_in, 0) + "`.",
        "Every method runs with its defaults and its preferred ensemble size. RMSE is the time mean "
        "of the per-cycle analysis RMSE of the ensemble mean; ± is the standard deviation over seeds.",
        "",
        "## Standard setup: all 40 variables observed, R = I",
        "",
        "| method | N | analysis RMSE (mean ± sd) | per seed | target | published | spread | s/cycle |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for _, _, label in METHODS:
        sel = [r for r in rows if r["obs"] == "all" and r["method"] == label]
        mean, sd, vals = _stats(sel, "analysis_rmse")
        spread = statistics.fmean(r["spread"] for r in sel)
        sec = statistics.fmean(r["seconds_per_cycle"] for r in sel)
        target = TARGETS.get(label)
        verdict = f"<= {target} {'met' if mean <= target else 'NOT met'}" if target else ""
        out.append(f"| {label} | {sel[0]['members']} | {mean:.4f} ± {sd:.4f} | {', '.join(f'{v:.4f}' for v in vals)} "
                   f"| {verdict} | {PUBLISHED.get(label, '')} | {spread:.3f} | {sec * 1e3:.2f} ms |")
    out += ["", "## Sparse and nonlinear observations (analysis RMSE, mean ± sd over seeds)", "",
            "| method | " + " | ".join(OBS) + " |", "|---" * (len(OBS) + 1) + "|"]
    for _, _, label in METHODS:
        cells = []
        for obs in OBS:
            mean, sd, _ = _stats([r for r in rows if r["obs"] == obs and r["method"] == label], "analysis_rmse")
            cells.append(f"{mean:.3f} ± {sd:.3f}")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", "`arctan+all` observes arctan((x - mean) / std) at every point with a 0.05 rad error: "
            "3dvar minimises it with L-BFGS, the ensemble methods use the ensemble of H(x).", ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
