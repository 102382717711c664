"""Chaos and stationarity of the `sw` testbed (issue 7's acceptance), plus its costs.

    .venv/bin/python benchmarks/sw_chaos.py                       # 32x64 in full, writes results
    .venv/bin/python benchmarks/sw_chaos.py --resolution 64x128 --long-days 200

Measures, per resolution: step cost; climatology generation time (fresh cache); climatological
std per channel and the height-anomaly correlation length; lag correlations; twin runs from
1e-4 relative perturbations (error-doubling time, saturation against the climatological
difference); the eddy kinetic energy (EKE) trend over days 100-200; finiteness over the long
run. Writes benchmarks/results/sw_chaos[_RES].md and a PNG next to it.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from interfaces.models import sphere
from interfaces.models.sw import ShallowWater

RESULTS = Path(__file__).resolve().parent / "results"


def weighted_rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Area-weighted RMS over the last two axes."""
    return (x.pow(2) * w).mean(dim=(-2, -1)).sqrt()


def eke(state: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Eddy kinetic energy per member (m2 s-2): deviations of u, v from their zonal means."""
    uv = state[:, 1:]
    eddy = uv - uv.mean(-1, keepdim=True)
    return 0.5 * (eddy.pow(2).sum(1) * w).mean(dim=(-2, -1))


def step_costs(model: ShallowWater, batches=(1, 8, 20, 32), steps=40) -> dict[int, float]:
    out = {}
    spec0 = model.dyn.equilibrium
    for b in batches:
        spec = spec0.expand(b, -1, -1, -1).clone()
        model.dyn.integrate(spec, 3)
        t = time.perf_counter()
        model.dyn.integrate(spec, steps)
        out[b] = (time.perf_counter() - t) / steps * 1e3
    return out


def correlation_length(clim: torch.Tensor, model: ShallowWater, channel: int) -> tuple[float, float]:
    """Distances (km) where the mean anomaly correlation with a reference point falls to 0.5
    and first changes sign, averaged over reference points on every 4th row."""
    x = clim[:, channel].reshape(len(clim), -1)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-12)
    coords = model.point_coords()
    nlat, nlon = model.state_shape[1:]
    refs = torch.tensor([r * nlon + j for r in range(2, nlat - 2, 4) for j in range(0, nlon, 8)])
    corr = (x[:, refs].T @ x) / (len(x) - 1)  # (refs, points)
    dist = sphere.great_circle(coords[refs], coords)
    bins = torch.arange(0, 8000, 250.0)
    idx = torch.bucketize(dist, bins) - 1
    mean = torch.stack([corr[idx == k].mean() for k in range(len(bins))])
    centres = bins + 125.0

    def crossing(level):
        below = (mean < level).nonzero()
        if len(below) == 0:
            return float("nan")
        k = int(below[0])
        c0, c1 = mean[k - 1], mean[k]
        return float(centres[k - 1] + (c0 - level) / (c0 - c1) * 250.0)

    return crossing(0.5), crossing(0.0)


def lag_correlations(model, start_spec, lags_cycles=(1, 4, 12), cycles=120):
    """Correlation of height anomalies (about the run's own time mean) at the given lags."""
    spec = start_spec
    states = []
    for _ in range(cycles):
        spec = model.dyn.integrate(spec, model.steps_per_cycle)
        states.append(model.dyn.isht(spec[:, 2]).to(torch.float64))
    h = torch.stack(states)  # (time, members, lat, lon)
    h = h - h.mean(0)
    out = {}
    for lag in lags_cycles:
        a, b = h[:-lag].reshape(-1), h[lag:].reshape(-1)
        out[lag] = float((a * b).sum() / (a.norm() * b.norm()))
    return out, spec


def smooth_noise(model, n, gen):
    """Unit-rms smooth random fields (n, 3, nlat, nlon) in total wavenumbers 1-10."""
    from interfaces.models.sw import _random_height_noise

    fields = [model.dyn.isht(_random_height_noise(model.dyn, n, 1.0, gen)) for _ in range(3)]
    return torch.stack(fields, 1).to(torch.float64)


def run(resolution, members, long_days, twin_days, clim_n, precision, tag, spinup_days=30.0):
    torch.set_num_threads(1)  # the machine is shared; one thread gives steadier timings
    model = ShallowWater(resolution=resolution, precision=precision, spinup_days=spinup_days)
    w = model.area_weights()
    report = {"resolution": resolution, "precision": precision, "members": members}

    # Costs and climatology (generated into an empty cache, so the time is the real one).
    report["step_ms"] = step_costs(model)
    model.cache_dir = tempfile.mkdtemp(prefix="sw-chaos-")
    t = time.perf_counter()
    clim = model.climatology(clim_n)
    report["clim_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    model.climatology(clim_n)
    report["clim_reload_seconds"] = time.perf_counter() - t
    clim_std = weighted_rms(clim.std(0), w)  # per channel
    report["clim_std"] = clim_std.tolist()
    # Independent pairs: different trajectories of one snapshot (the pool is time-major).
    m = int(model.options["clim_members"])
    snaps = clim[: len(clim) // m * m].reshape(-1, m, *clim.shape[1:])
    indep = (snaps[:, : m // 2] - snaps[:, m // 2 : m // 2 * 2]).reshape(-1, *clim.shape[1:])
    report["clim_difference"] = (weighted_rms(indep, w).pow(2).mean(0).sqrt() / clim_std).tolist()
    report["corr_length_h"] = correlation_length(clim, model, 0)
    report["corr_length_u"] = correlation_length(clim, model, 1)
    print(f"[{resolution}] costs {report['step_ms']}, clim {report['clim_seconds']:.0f} s, std {clim_std.tolist()}", flush=True)

    # Control members from their own seed, spun up; lag correlations over the next 30 days.
    spec = model.spun_up(members, seed=12345)
    report["lag_corr"], spec = lag_correlations(model, spec)
    control = model.dyn.to_grid(spec).to(torch.float64)

    # Twins: each channel nudged by smooth noise of rms 1e-4 times its climatological std.
    gen = torch.Generator().manual_seed(99)
    twin = control + 1e-4 * clim_std[None, :, None, None] * smooth_noise(model, members, gen)
    pair = model.dyn.to_spectral(torch.cat([control, twin]))
    days_per_cycle = model.cycle_length / 24
    errors, eke_series, finite_days = [], [], 0
    times = []
    cycles_twin = round(twin_days / days_per_cycle)
    for k in range(cycles_twin + 1):
        if k:
            pair = model.dyn.integrate(pair, model.steps_per_cycle)
        grid = model.dyn.to_grid(pair).to(torch.float64)
        diff = weighted_rms(grid[:members] - grid[members:], w) / clim_std  # (members, 3)
        errors.append(diff.pow(2).mean(1).sqrt())
        times.append(k * days_per_cycle)
    errors = torch.stack(errors)  # (time, members)
    times = torch.tensor(times)
    log_err = errors.log().mean(1)
    window = (errors.mean(1) > 1e-3) & (errors.mean(1) < 1e-1)
    if window.sum() < 3:  # too short a run to see exponential growth (smoke tests)
        window = times >= 0
    slope = torch.linalg.lstsq(torch.stack([times[window], torch.ones(int(window.sum()), dtype=torch.float64)], 1),
                               log_err[window, None]).solution[0, 0]
    report["doubling_days"] = math.log(2) / float(slope) if float(slope) > 0 else float("inf")
    report["saturation"] = float(errors[times >= twin_days - 20].mean())
    report["twin"] = (times, errors)
    print(f"[{resolution}] doubling {report['doubling_days']:.2f} d, saturation {report['saturation']:.2f}", flush=True)

    # The long run: the control members, daily EKE, finiteness checked every day.
    spec = pair[:members]
    t = time.perf_counter()
    days = torch.arange(1, long_days + 1, dtype=torch.float64)
    for day in range(long_days):
        spec = model.dyn.integrate(spec, round(1 / days_per_cycle) * model.steps_per_cycle)
        grid = model.dyn.to_grid(spec).to(torch.float64)
        if not torch.isfinite(grid).all():
            break
        finite_days += 1
        eke_series.append(eke(grid, w))
        if (day + 1) % 100 == 0:
            print(f"[{resolution}] day {day + 1}, EKE {float(eke_series[-1].mean()):.1f}, {time.perf_counter() - t:.0f} s", flush=True)
    report["long_seconds"] = time.perf_counter() - t
    report["finite_days"] = finite_days
    eke_t = torch.stack(eke_series)  # (days, members)
    report["eke"] = (days[: len(eke_t)], eke_t)
    span = min(200, len(eke_t))
    report["trend_window"] = (span // 2, span)
    y = eke_t[span // 2 : span].mean(1)
    # Trend and its standard error from 10-day block means (daily EKE is autocorrelated).
    block = 10 if len(y) >= 40 else 1
    blocks = y[: len(y) // block * block].reshape(-1, block).mean(1)
    tb = torch.arange(len(blocks), dtype=torch.float64) * block
    A = torch.stack([tb - tb.mean(), torch.ones_like(tb)], 1)
    coef = torch.linalg.lstsq(A, blocks[:, None]).solution[:, 0]
    resid = blocks - A @ coef
    se = math.sqrt(float(resid.pow(2).sum()) / (len(blocks) - 2) / float((tb - tb.mean()).pow(2).sum()))
    report["eke_mean"] = float(y.mean())
    report["eke_trend_per_100d"] = float(coef[0]) * 100 / float(y.mean())
    report["eke_trend_t"] = float(coef[0]) / se
    report["eke_blocks"] = [float(eke_t[(days[: len(eke_t)] > a) & (days[: len(eke_t)] <= a + 100)].mean())
                            for a in range(0, len(eke_t), 100)]
    last = grid.to(torch.float64)
    vort = model.dyn.isht(spec[:, 0]).to(torch.float64)
    report["eddy_vort"] = float(weighted_rms(vort - vort.mean(-1, keepdim=True), w).mean())
    report["rms_wind"] = float(weighted_rms(last[:, 1:].pow(2).sum(1).sqrt(), w).mean())
    plot(report, tag)
    return report


def plot(report, tag):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    times, errors = report["twin"]
    a.semilogy(times, errors, color="0.7", lw=0.8)
    a.semilogy(times, errors.log().mean(1).exp(), color="k", lw=2, label="geometric mean")
    a.axhline(math.sqrt(2), ls="--", color="C3", label="independent states ($\\sqrt{2}$)")
    a.set(xlabel="days", ylabel="twin difference / climatological std",
          title=f"twin runs, doubling {report['doubling_days']:.2f} d")
    a.legend()
    days, eke_t = report["eke"]
    b.plot(days, eke_t.mean(1), color="k", lw=0.8)
    b.axvspan(*report["trend_window"], color="C0", alpha=0.15, label="trend window")
    b.set(xlabel="days after spin-up", ylabel="EKE (m$^2$ s$^{-2}$)",
          title=f"EKE, trend {report['eke_trend_per_100d'] * 100:+.1f} % per 100 d")
    b.legend()
    fig.suptitle(f"sw {report['resolution']} ({report['precision']}, {report['members']} members)")
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / f"sw_chaos{tag}.png", dpi=90)
    plt.close(fig)


def markdown(report, tag, argv):
    r = report
    stds = ", ".join(f"{v} {s:.3g}" for v, s in zip(("h", "u", "v"), r["clim_std"]))
    costs = ", ".join(f"{b}: {ms:.1f}" for b, ms in r["step_ms"].items())
    lags = ", ".join(f"{lag * 6} h: {c:.2f}" for lag, c in r["lag_corr"].items())
    lines = [
        f"# sw chaos and stationarity, {r['resolution']} ({r['precision']})",
        "",
        f"Command: `.venv/bin/python benchmarks/sw_chaos.py {' '.join(argv)}`  ",
        f"Machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, 1 thread; load average at the end {os.getloadavg()[0]:.1f} "
        "(shared machine: timings are upper bounds).",
        "",
        "| quantity | value | acceptance |",
        "|---|---|---|",
        f"| error-doubling time (twins from 1e-4, {r['members']} pairs) | {r['doubling_days']:.2f} days | 0.5-5 days |",
        f"| saturated twin difference / climatological std (last 20 days) | {r['saturation']:.2f} | near the climatological difference |",
        f"| difference of independent climatology samples / climatological std | {sum(r['clim_difference']) / 3:.2f} | (the reference, ~sqrt 2) |",
        f"| EKE trend over days {r['trend_window'][0]}-{r['trend_window'][1]} | {r['eke_trend_per_100d'] * 100:+.1f} % per 100 days (t = {r['eke_trend_t']:.1f}, 10-day blocks) | no trend |",
        f"| days finite | {r['finite_days']} of the long run | 1000 |",
        f"| EKE per 100-day block (m2 s-2) | {', '.join(f'{v:.0f}' for v in r['eke_blocks'])} | stationary |",
        f"| eddy vorticity rms (end) | {r['eddy_vort']:.2e} s-1 | issue: ~3.8e-5 |",
        f"| rms wind speed (end) | {r['rms_wind']:.1f} m s-1 | issue: ~41 |",
        f"| climatological std per channel | {stds} | issue: h ~350 m |",
        f"| height-anomaly lag correlation | {lags} | issue: 0.96, 0.62, 0.0 |",
        f"| anomaly correlation 0.5 / 0 at (h) | {r['corr_length_h'][0]:.0f} / {r['corr_length_h'][1]:.0f} km | |",
        f"| anomaly correlation 0.5 / 0 at (u) | {r['corr_length_u'][0]:.0f} / {r['corr_length_u'][1]:.0f} km | |",
        f"| step cost, ms by batch size | {costs} | issue: 32 members 5-11 ms |",
        f"| climatology of {r['clim_n']} samples from an empty cache | {r['clim_seconds']:.0f} s (reload {r['clim_reload_seconds']:.2f} s) | < 60 s for the tests' needs |",
        f"| long run ({r['finite_days']} days x {r['members']} members) | {r['long_seconds']:.0f} s | |",
        "",
        f"![twin-run errors and EKE](sw_chaos{tag}.png)",
        "",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"sw_chaos{tag}.md").write_text("\n".join(lines))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", default="32x64")
    p.add_argument("--precision", default="float32")
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--long-days", type=int, default=1000)
    p.add_argument("--twin-days", type=int, default=60)
    p.add_argument("--spinup-days", type=float, default=30.0, help="(smoke tests only)")
    p.add_argument("--tag", default=None, help="suffix of the output files")
    p.add_argument("--clim", type=int, default=500, help="climatology samples to generate and time")
    args = p.parse_args(argv)
    tag = "" if (args.resolution, args.precision) == ("32x64", "float32") else f"_{args.resolution}_{args.precision}"
    tag = tag if args.tag is None else args.tag
    report = run(args.resolution, args.members, args.long_days, args.twin_days, args.clim, args.precision, tag,
                 args.spinup_days)
    report["clim_n"] = args.clim
    markdown(report, tag, argv)
    print((RESULTS / f"sw_chaos{tag}.md").read_text())


if __name__ == "__main__":
    main()
