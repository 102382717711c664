"""Run a comparison suite and copy its tables and plots into benchmarks/results/<suite>/.

    python benchmarks/run_suite.py full [any `da-harness compare` option, e.g. --workers 2]

is `da-harness compare --suite full --out runs/compare-full` followed by the copy; the run files
(one netCDF per job, large at 64x128) stay in runs/ and are not committed.
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
    out = ROOT / "runs" / f"compare-{suite}"
    code = cli(["compare", "--suite", suite, "--out", str(out), *rest])
    if (out / "results.md").exists():
        dest = ROOT / "benchmarks" / "results" / suite
        dest.mkdir(parents=True, exist_ok=True)
        for pattern in KEEP:
            for f in out.glob(pattern):
                shutil.copy2(f, dest / f.name)
        print(f"run_suite: tables and plots copied to {dest.relative_to(ROOT)}", file=sys.stderr)
    return code


if __name__ == "__main__":  # the guard Dask's worker processes need
    sys.exit(main(sys.argv[1:]))
