"""LO-SDA's cost per cycle before and after the speed work (issue 13 item 6), measured side by side.

"Before" is the analysis path as of ``--base`` (the pre-speed-work commit): a copy of the current
``losda_plugin`` whose ``guidance/losda.py`` is the base commit's and whose ``use_prior`` does not
call ``faster_padding`` / ``keep_freed_memory``; its own processes import it instead of the
working tree's (``$LOSDA_SPEED_BEFORE``). "After" is the working tree. Each measurement is a fresh process and the two variants
alternate (A B A B ...), so a loaded machine slows both alike.

Two parts:
1. ``da-harness run --model sw --method losda --obs random:0.05`` (quick-preset prior in
   ``--cache-dir``, trained there on first use): the harness's wall seconds per cycle, and the
   CPU seconds per cycle spent inside the analysis (``LatentMethod.assimilate``, timed by this
   script with ``time.process_time``: on a loaded machine CPU time is the fairer figure).
2. The analysis alone, on priors of the quick and full presets' network sizes with random weights
   (no climatology or training needed, so 64x128 costs nothing to set up), at 32x64 and 64x128:
   wall and CPU seconds per analysis, same observation density. L-BFGS caps its evaluations per
   reverse step, so the count (and the cost) hardly depends on the weights.

    python benchmarks/losda_speed.py --cache-dir /tmp/h9cache --repeats 2 --out benchmarks/results/losda_speed.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = "b3fd67b"  # main before the speed work (f4c810c)
BEFORE_ENV = "LOSDA_SPEED_BEFORE"


def before_tree(base: str) -> Path:
    """A directory holding the 'before' losda_plugin (see use_before_tree)."""
    tmp = Path(tempfile.mkdtemp(prefix="losda-before-"))
    shutil.copytree(ROOT / "losda_plugin", tmp / "losda_plugin", ignore=shutil.ignore_patterns("__pycache__"))
    old = subprocess.run(["git", "show", f"{base}:losda_plugin/guidance/losda.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    (tmp / "losda_plugin/guidance/losda.py").write_text(old)
    methods = (tmp / "losda_plugin/methods.py").read_text()
    for line in ("        faster_padding(prior)\n", "        keep_freed_memory()\n"):
        if line not in methods:
            raise SystemExit(f"losda_plugin/methods.py no longer has {line.strip()!r}: update before_tree()")
        methods = methods.replace(line, "")
    (tmp / "losda_plugin/methods.py").write_text(methods)
    return tmp


# --- children (one measurement each) ----------------------------------------------------------
def child_run(args: list[str]) -> None:
    """``da-harness run args --json``; prints its summary plus the analysis CPU seconds per cycle."""
    import torch  # noqa: F401  (imported before timing)

    from interfaces.cli import main
    from losda_plugin.methods import LatentMethod

    cpu = {"seconds": 0.0, "calls": 0}
    assimilate = LatentMethod.assimilate

    def timed(self, *a, **k):
        c0 = time.process_time()
        try:
            return assimilate(self, *a, **k)
        finally:
            cpu["seconds"] += time.process_time() - c0
            cpu["calls"] += 1

    LatentMethod.assimilate = timed
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["run", *args, "--json", "--no-progress"])
    if rc:
        raise SystemExit(rc)
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    # Mean over every cycle's analysis, the first included (as the harness's seconds_per_cycle).
    print(json.dumps({"seconds_per_cycle": summary["seconds_per_cycle"],
                      "analysis_cpu_per_cycle": cpu["seconds"] / max(cpu["calls"], 1),
                      "analysis_rmse": summary["analysis_rmse"], "misfit": summary.get("diag_misfit")}))


def child_analysis(preset: str, nlat: int, nlon: int, repeats: int) -> None:
    """Wall and CPU seconds of one losda analysis on a random-weight prior of ``preset``'s sizes."""
    import math

    import torch

    from interfaces.observations import Observations, SparseLinearOperator
    from losda_plugin.config import PRESETS
    from losda_plugin.geometry import Geometry
    from losda_plugin.methods import LOSDA
    from losda_plugin.prior import LatentPrior, build_networks

    torch.set_num_threads(1)
    torch.manual_seed(0)
    shape = (3, nlat, nlon)
    cfg = dict(PRESETS[("sphere", preset)])
    cfg["vae_widths"] = [int(w) for w in str(cfg["vae_widths"]).split(",")]
    geometry = Geometry("sphere", shape[1:], 3, True)
    vae, denoiser = build_networks(cfg, geometry, torch.zeros(shape), torch.ones(shape), sigma_data=0.5)
    torch.nn.init.normal_(denoiser.net.out.conv.weight, std=0.05)
    prior = LatentPrior(geometry, cfg, vae, denoiser, torch.full(vae.latent_shape, 0.25)).eval()
    n = math.prod(shape)
    index = torch.randperm(n)[: n // 20]  # random:0.05
    op = SparseLinearOperator(shape, index, torch.ones(len(index)), torch.ones(len(index)),
                              torch.zeros(len(index), 2), index // (nlat * nlon), "random:0.05")
    background = torch.randn(1, *shape, dtype=torch.float64)
    obs = Observations.from_values(torch.randn(len(index), dtype=torch.float64), op.std)
    method = LOSDA(**LOSDA.defaults)
    method.use_prior(prior, torch.Generator().manual_seed(1))
    first = method.assimilate(background, obs, op)  # warm-up, not timed
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        method.assimilate(background, obs, op)
    print(json.dumps({"wall": (time.perf_counter() - w0) / repeats, "cpu": (time.process_time() - c0) / repeats,
                      "checksum": float(first.abs().sum())}))


# --- the parent -------------------------------------------------------------------------------
def measure(command: list[str], before: Path | None) -> dict:
    env = {**os.environ, "DA_HARNESS_THREADS": "1", BEFORE_ENV: str(before or "")}
    done = subprocess.run([sys.executable, __file__, *command], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def interleaved(command: list[str], before: Path, repeats: int) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(repeats):
        results["before"].append(measure(command, before))
        results["after"].append(measure(command, None))
    return results


def use_before_tree() -> None:
    """In a child: import losda_plugin from the 'before' tree named by $LOSDA_SPEED_BEFORE. The
    editable install's finder would find the working tree's first, so the path finder goes ahead."""
    before = os.environ.get(BEFORE_ENV)
    if before:
        import importlib.machinery
        sys.path.insert(0, before)
        sys.meta_path.sort(key=lambda finder: finder is not importlib.machinery.PathFinder)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default=BASE)
    p.add_argument("--cache-dir", help="cache holding (or to hold) the quick-preset prior (required)")
    p.add_argument("--cycles", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2, help="A B pairs per measurement")
    p.add_argument("--analyses", type=int, default=3, help="timed analyses per process in part 2")
    p.add_argument("--out", type=Path)
    p.add_argument("--child-run", nargs=argparse.REMAINDER)
    p.add_argument("--child-analysis", nargs=3, metavar=("PRESET", "NLAT", "NLON"))
    args = p.parse_args()
    use_before_tree()
    if args.child_run is not None:
        return child_run(args.child_run)
    if args.child_analysis:
        preset, nlat, nlon = args.child_analysis
        return child_analysis(preset, int(nlat), int(nlon), args.analyses)

    if not args.cache_dir:
        p.error("--cache-dir is required")
    before = before_tree(args.base)
    load = os.getloadavg()[0]
    lines = ["# LO-SDA cost per cycle, before and after the speed work (issue 13 item 6)", "",
             f"Command: `python benchmarks/losda_speed.py {' '.join(sys.argv[1:])}`  ",
             f"Before: analysis path of {args.base}; after: commit "
             f"{subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip()} "
             f"(working tree). One torch thread, a fresh process per measurement, before and after alternating.  ",
             f"Machine: {os.cpu_count()} cores, load average {load:.1f} at the start (shared with other jobs: wall "
             "times are inflated and noisy; CPU times are the steadier figure).", ""]

    run = ["--child-run", "--model", "sw", "--method", "losda", "--obs", "random:0.05", "--cycles",
           str(args.cycles), "--seed", "4444", "--set", "preset=quick", "--cache-dir", args.cache_dir]
    measure(run, None)  # trains the prior if the cache lacks it (not timed)
    res = interleaved(run, before, args.repeats)
    lines += [f"## 1. `da-harness run --model sw --method losda --obs random:0.05 --cycles {args.cycles} "
              "--seed 4444 --set preset=quick` (32x64)", "",
              "| variant | wall s/cycle (each run) | analysis CPU s/cycle (each run) | analysis RMSE (each run) |", "|---|---|---|---|"]
    for variant in ("before", "after"):
        r = res[variant]
        cells = [", ".join(f"{x[key]:{fmt}}" for x in r)
                 for key, fmt in (("seconds_per_cycle", ".3f"), ("analysis_cpu_per_cycle", ".3f"), ("analysis_rmse", ".9f"))]
        lines.append(f"| {variant} | {' | '.join(cells)} |")
    med = {v: (statistics.median(x["seconds_per_cycle"] for x in res[v]),
               statistics.median(x["analysis_cpu_per_cycle"] for x in res[v])) for v in res}
    lines += ["", f"Ratio before/after (medians): wall {med['before'][0] / med['after'][0]:.2f}x, "
                  f"analysis CPU {med['before'][1] / med['after'][1]:.2f}x.", ""]

    lines += ["## 2. One losda analysis alone (defaults: 8 samples, 10 steps, L-BFGS 5), random-weight priors",
              "", "| grid | preset sizes | before wall / CPU s | after wall / CPU s | ratio wall / CPU | same analysis |",
              "|---|---|---|---|---|---|"]
    for nlat, nlon in ((32, 64), (64, 128)):
        for preset in ("quick", "full"):
            r = interleaved(["--analyses", str(args.analyses), "--child-analysis", preset, str(nlat), str(nlon)],
                            before, args.repeats)
            b = {k: statistics.median(x[k] for x in r["before"]) for k in ("wall", "cpu")}
            a = {k: statistics.median(x[k] for x in r["after"]) for k in ("wall", "cpu")}
            same = max(abs(x["checksum"] - r["before"][0]["checksum"]) for x in r["before"] + r["after"])
            lines.append(f"| {nlat}x{nlon} | {preset} | {b['wall']:.3f} / {b['cpu']:.3f} | {a['wall']:.3f} / {a['cpu']:.3f} | "
                         f"{b['wall'] / a['wall']:.2f} / {b['cpu'] / a['cpu']:.2f} | "
                         f"sum of abs differs by {same:.1e} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    shutil.rmtree(before, ignore_errors=True)


if __name__ == "__main__":
    main()
