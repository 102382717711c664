"""What Dask's worker environment costs each method, and what `sweep.run_job` gets back.

Dask's nannies start every worker with MALLOC_TRIM_THRESHOLD_ set. Setting it freezes glibc's
mmap threshold at 128 KiB, so a tensor above that size (a 20-member 32x64 state is 1 MB in
float64) is mapped, zero-filled and unmapped again on every operation. Since c7c170b,
`sweep.run_job` calls `interfaces.allocator.keep_freed_memory()` first. The latent methods did
that already, in `prepare`.

For each method this runs the same short experiment in fresh processes, with Dask's variable
set, once without and once with the fix. It reports CPU seconds per cycle (user + system over the
whole run, prepare included) and minor page faults per cycle. Page faults do not depend on the
machine's load; CPU seconds do, a little.

    python benchmarks/dask_allocator.py --methods free,3dvar,letkf,ensf,dps --cycles 20 \\
        --out benchmarks/results/dask_allocator.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys
import torch
torch.set_num_threads(1)
if sys.argv[1] == "fixed":
    from interfaces.allocator import keep_freed_memory
    keep_freed_memory()
from interfaces import api
method, members, cycles = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
options = ["model.resolution=32x64"] + (["preset=full"] if method in ("losda", "dps", "l3dvar") else [])
before = resource.getrusage(resource.RUSAGE_SELF)
ds = api.run(model="sw", method=method, members=members, obs="random:0.05", cycles=cycles, burn_in=0,
             seed=7, options=options)
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
print(json.dumps({"cpu_per_cycle": cpu / cycles, "faults_per_cycle": (after.ru_minflt - before.ru_minflt) / cycles,
                  "rmse": float(ds.analysis_rmse.values[-1])}))
"""

MEMBERS = {"letkf": 20, "enkf": 20, "ensf": 20}


def measure(method: str, mode: str, cycles: int) -> dict:
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536", "DA_HARNESS_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, mode, method, str(MEMBERS.get(method, 1)), str(cycles)],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="free,3dvar,letkf,ensf,dps")
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    rows = ["| method | CPU s/cycle, Dask env | with the fix | ratio | page faults/cycle, Dask env | with the fix | same last RMSE |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for method in a.methods.split(","):
        slow, fast = measure(method, "dask", a.cycles), measure(method, "fixed", a.cycles)
        rows.append(f"| {method} | {slow['cpu_per_cycle']:.3f} | {fast['cpu_per_cycle']:.3f} | "
                    f"{slow['cpu_per_cycle'] / fast['cpu_per_cycle']:.2f} | {slow['faults_per_cycle']:.0f} | "
                    f"{fast['faults_per_cycle']:.0f} | {slow['rmse'] == fast['rmse']} |")
        print(rows[-1], flush=True)
    text = (f"# Dask's worker environment and the allocator fix\n\n"
            f"Command: `python benchmarks/dask_allocator.py --methods {a.methods} --cycles {a.cycles}`. "
            f"32x64 sphere, `random:0.05`, seed 7, one torch thread, MALLOC_TRIM_THRESHOLD_=65536 in both columns "
            f"(as Dask sets it). CPU seconds include prepare and are spread over the cycles.\n\n" + "\n".join(rows) + "\n")
    if a.out:
        Path(a.out).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
