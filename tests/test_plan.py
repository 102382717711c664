"""`compare --plan`: where a resumable sweep stands, per table and row, without running anything."""

import json

import pytest
import xarray as xr

from interfaces import suites, sweep
from interfaces.cli import build_parser
from interfaces.registry import get_registry

ARGS = ["--methods", "free,3dvar", "--obs", "every:2", "--cycles", "12", "--burn-in", "3",
        "--set", "3dvar.b_source=climatology", "--no-plots"]


def jobs_for(seeds: str) -> list[dict]:
    args = build_parser().parse_args(["compare", *ARGS, "--seeds", seeds])
    return suites.build_jobs(args, None, get_registry())


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


def test_a_row_with_only_part_way_runs_is_estimated_from_their_recorded_cycles(half_done, cli):
    """No finished seed among those asked for: the part-way run's own per-cycle wall times (its
    first 5 cycles, copied from seed 0's file) price the 7 + 12 cycles still owed, marked '+'."""
    runs = half_done / "runs"
    code, out, _ = cli("compare", *ARGS, "--seeds", "2,4", "--out", str(half_done), "--plan", "--json")
    assert code == 0
    for row in json.loads(out)["rows"]:
        job = next(j for j in jobs_for("2,4") if j["method"] == row["row"] and j["seed"] == 2)
        with xr.open_dataset(sweep.run_path(runs, job)) as ds:
            measured = float(ds["seconds"].mean())
        assert measured > 0
        assert row["estimated_from"] == "part-way runs"
        assert row["seconds_per_cycle"] == pytest.approx(measured)
        assert row["seconds_left"] == pytest.approx(measured * (7 + 12))
    code, out, _ = cli("compare", *ARGS, "--seeds", "2,4", "--out", str(half_done), "--plan")
    assert code == 0 and "unknown" not in out
    lines = [line for line in out.splitlines() if line.rstrip().endswith(("free", "3dvar"))]
    assert len(lines) == 2 and all(line.split()[2].endswith("+") for line in lines)


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


def test_finished_writes_interim_tables_of_the_finished_seeds_only(half_done, cli):
    """`compare --finished`: the finished seeds' tables, each row saying how many of its seeds
    are in; nothing run, the final tables untouched, the part-way and stale runs left out."""
    runs = half_done / "runs"
    before = {p.name: p.stat().st_mtime_ns for p in runs.iterdir()}
    final = half_done / "results.md"
    final_text = final.read_text()
    code, out, _ = cli("compare", *ARGS, "--seeds", "0,1,2,3,4", "--out", str(half_done), "--finished", "--json")
    assert code == 0
    assert {p.name: p.stat().st_mtime_ns for p in runs.iterdir()} == before
    assert final.read_text() == final_text  # the final table is never overwritten by an interim one
    summary = json.loads(out)
    (table,) = summary["tables"]
    rows = {r["method"]: r for r in table["rows"]}
    assert set(rows) == {"free", "3dvar"}
    for method, row in rows.items():
        assert row["seeds"] == 2 and row["seeds_planned"] == 5
        # The mean is over the two finished seeds alone.
        done = [sweep.file_state(sweep.run_path(runs, j))[1]["analysis_rmse"]
                for j in jobs_for("0,1") if j["method"] == method]
        assert row["analysis_rmse"] == pytest.approx(sum(done) / 2)
    assert len(summary["owed"]) == 6 and {o["job"]["seed"] for o in summary["owed"]} == {2, 3, 4}
    text = (half_done / "interim" / "results.md").read_text()
    assert "(interim)" in text and "4 of 10 runs finished" in text
    assert "4 finished run files (nothing run or trained)" in text and "(training included)" not in text
    assert "| free | 1 | 2 of 5 |" in text


def test_finished_names_the_rows_with_no_finished_seed(half_done, cli):
    code, out, _ = cli("compare", "--methods", "free,3dvar,climatology", *ARGS[2:], "--seeds", "0,1",
                       "--out", str(half_done), "--finished")
    assert code == 0
    assert "Not started yet (no finished seed): climatology." in out
    assert "| free | 1 | 2 |" in out  # a row with all its seeds in reads as a final row


def test_finished_says_when_nothing_is_owed_that_plain_compare_is_final(half_done, cli):
    code, _, _ = cli("compare", *ARGS, "--seeds", "0,1", "--out", str(half_done), "--finished")
    assert code == 0
    text = (half_done / "interim" / "results.md").read_text()
    assert "4 of 4 runs finished" in text and "without --finished writes the final tables" in text
    code, _, _ = cli("compare", *ARGS, "--seeds", "0,1,4", "--out", str(half_done), "--finished")
    assert code == 0
    assert "without --finished" not in (half_done / "interim" / "results.md").read_text()  # seed 4 is owed


def test_plan_and_finished_together_are_refused(half_done, cli):
    code, _, err = cli("compare", *ARGS, "--seeds", "0,1", "--out", str(half_done), "--plan", "--finished")
    assert code != 0 and "--plan and --finished" in err


def test_the_plan_says_which_seeds_a_sweep_is_running_now(half_done, cli):
    """A job whose run lock another process holds is being run: the plan says so beside its
    part-way cycle (seed 2), or alone for one not started yet (seed 4), and counts them."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    runs = half_done / "runs"
    held = [str(sweep.run_path(runs, j)) for j in jobs_for("2,4") if j["method"] == "free"]
    holder = textwrap.dedent(f"""
        import contextlib, sys, time
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from interfaces import sweep
        with contextlib.ExitStack() as stack:
            for path in {held!r}:
                stack.enter_context(sweep.run_lock(path))
            print("held", flush=True)
            sys.stdin.readline()
    """)
    other = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        code, out, _ = cli("compare", *ARGS, "--seeds", "0,1,2,3,4", "--out", str(half_done), "--plan", "--json")
        rows = {r["row"]: r for r in json.loads(out)["rows"]}
        assert code == 0 and rows["free"]["running"] == [2, 4] and rows["3dvar"]["running"] == []
        code, out, _ = cli("compare", *ARGS, "--seeds", "0,1,2,3,4", "--out", str(half_done), "--plan")
        free = next(line for line in out.splitlines() if "free" in line and "/5" in line)
        assert "2: 5/12 running, 4: running" in free and "(2 running now)" in out
    finally:
        other.communicate("\n", timeout=30)
    code, out, _ = cli("compare", *ARGS, "--seeds", "0,1,2,3,4", "--out", str(half_done), "--plan")
    assert "running" not in out  # the locks given back: nothing runs
