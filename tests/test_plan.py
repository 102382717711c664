"""`compare --plan`: where a resumable sweep stands, per table and row, without running anything."""

import json

import pytest
import xarray as xr

from interfaces import compare, sweep
from interfaces.cli import build_parser
from interfaces.registry import get_registry

ARGS = ["--methods", "free,3dvar", "--obs", "every:2", "--cycles", "12", "--burn-in", "3",
        "--set", "3dvar.b_source=climatology", "--no-plots"]


def jobs_for(seeds: str) -> list[dict]:
    args = build_parser().parse_args(["compare", *ARGS, "--seeds", seeds])
    return compare.build_jobs(args, None, get_registry())


@pytest.fixture(scope="module")
def half_done(tmp_path_factory):
    """Seeds 0-1 finished by compare; seed 2 part-way (5 of 12 cycles); seed 3 made by other
    code; seed 4 never started."""
    from interfaces.cli import main

    out = tmp_path_factory.mktemp("plan")
    assert main(["compare", *ARGS, "--seeds", "0,1", "--out", str(out), "--serial"]) == 0
    runs = out / "runs"
    for method in ("free", "3dvar"):
        by_seed = {j["seed"]: j for j in jobs_for("0,1,2,3,4") if j["method"] == method}
        with xr.open_dataset(sweep.run_path(runs, by_seed[0])) as ds:
            done = ds.load()
        partial = done.isel(time=slice(0, 5))
        partial.attrs = {**done.attrs, "status": "partial", "completed_cycles": 5}
        partial.to_netcdf(sweep.run_path(runs, by_seed[2]))
        other = done.copy()
        other.attrs = {**done.attrs, "code_version": "0123456789abcdef"}
        other.to_netcdf(sweep.run_path(runs, by_seed[3]))
    return out


def test_the_plan_counts_done_partial_stale_and_missing_runs_and_runs_nothing(half_done, cli):
    runs = half_done / "runs"
    before = {p.name: p.stat().st_mtime_ns for p in runs.iterdir()}
    code, out, _ = cli("compare", *ARGS, "--seeds", "0,1,2,3,4", "--out", str(half_done), "--plan", "--json")
    assert code == 0
    assert {p.name: p.stat().st_mtime_ns for p in runs.iterdir()} == before  # nothing run, nothing rewritten
    rows = {r["row"]: r for r in json.loads(out)["rows"]}
    assert set(rows) == {"free", "3dvar"}
    for method, row in rows.items():
        assert row["seeds"] == 5 and row["done"] == [0, 1]
        assert row["partial"] == {"2": 5} and row["stale"] == [3] and row["to_run"] == [4]
        finished = [sweep.file_state(sweep.run_path(runs, j))[1]["seconds_per_cycle"]
                    for j in jobs_for("0,1") if j["method"] == method]
        per_cycle = sum(finished) / 2
        assert row["seconds_per_cycle"] == pytest.approx(per_cycle)
        # Owed: 7 cycles of the part-way run, 12 each for the stale and the missing one.
        assert row["cycles_owed"] == 7 + 12 + 12
        assert row["seconds_left"] == pytest.approx(per_cycle * 31)


def test_the_text_plan_names_each_row_and_says_what_it_cannot_estimate(half_done, cli, tmp_path):
    code, out, _ = cli("compare", *ARGS, "--seeds", "0,1,2,3,4", "--out", str(half_done), "--plan")
    assert code == 0
    lines = out.splitlines()
    free = next(line for line in lines if line.rstrip().endswith("free (of which 1 made by other code)"))
    assert free.split()[:2] == ["2/5", "2"] and "2: 5/12" in free
    assert "4 of 10 runs done" in out
    # An empty folder: every row still to run, with nothing measured to estimate from.
    code, out, _ = cli("compare", *ARGS, "--seeds", "0,1", "--out", str(tmp_path / "empty"), "--plan")
    assert code == 0 and "0 of 4 runs done" in out and "2 row(s) with none ('unknown')" in out
    assert not (tmp_path / "empty").exists()  # the plan creates nothing
