"""Run a comparison suite and copy its tables and plots into benchmarks/results/<suite>/.

    python benchmarks/run_suite.py full [any `da-harness compare` option, e.g. --methods 3dvar,letkf]

is `da-harness compare --suite full --out runs/compare-full` followed by the copy; with
`--out runs/compare-NAME` the copy goes to benchmarks/results/NAME/. The run files (one netCDF
per job, large at 64x128) stay in runs/ and are not committed.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEEP = ("*.md", "*.csv", "*.nc", "*.png", "summary.json")


def main(argv: list[str]) -> int:
    from interfaces.cli import main as cli

    if not argv or argv[0].startswith("-"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    suite, rest = argv[0], argv[1:]
    if "--out" in rest:
        out = Path(rest[rest.index("--out") + 1]).resolve()
    else:
        out = ROOT / "runs" / f"compare-{suite}"
        rest = [*rest, "--out", str(out)]
    code = cli(["compare", "--suite", suite, *rest])
    if (out / "results.md").exists():
        dest = ROOT / "benchmarks" / "results" / out.name.removeprefix("compare-")
        dest.mkdir(parents=True, exist_ok=True)
        for pattern in KEEP:
            for f in out.glob(pattern):
                shutil.copy2(f, dest / f.name)
        print(f"run_suite: tables and plots copied to {dest.relative_to(ROOT)}", file=sys.stderr)
    return code


if __name__ == "__main__":  # the guard Dask's worker processes need
    sys.exit(main(sys.argv[1:]))
