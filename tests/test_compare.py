"""The comparison engine: sweeps (serial and Dask), resumability, failure isolation, tables,
interval arithmetic, plots and the command line's errors."""

import csv
import json
import math

import pytest

from interfaces import aggregate, compare, statistics, suites, sweep
from interfaces.assimilator import Assimilator
from interfaces.errors import UsageError
from interfaces.hookspecs import hookimpl
from interfaces.registry import build_registry, get_registry

SCORES = ("analysis_rmse", "background_rmse", "omb_rms", "oma_rms", "spread_skill", "crps")


#: A cheap B for 3D-Var keeps the sweeps in seconds.
OPTIONS = {"3dvar": {"b_source": "climatology"}}


def tiny_jobs(methods=("free", "climatology", "3dvar"), seeds=2, cycles=12, **extra):
    return [sweep.make_job(model="lorenz96", method=m, obs="every:2", cycles=cycles, burn_in=3, seed=s,
                           method_options=OPTIONS.get(m, {}), **extra)
            for m in methods for s in range(seeds)]


def scores(records):
    return {(r["job"]["method"], r["job"]["seed"]): {k: r["summary"].get(k) for k in SCORES} for r in records}


@pytest.fixture(scope="module")
def serial_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    cache = tmp_path_factory.getbasetemp() / "da-cache"
    result = compare.compare(tiny_jobs(), out, get_registry(), serial=True, cache_dir=str(cache), log=lambda s: None)
    return out, cache, result


def test_serial_and_local_cluster_give_identical_numbers(serial_sweep, tmp_path):
    import socket
    import warnings

    out, cache, serial = serial_sweep
    # One job with an option its method does not declare: it fails inside a worker, alone.
    bad = sweep.make_job(model="lorenz96", method="3dvar", obs="every:2", cycles=12, burn_in=3, seed=0,
                         method_options={"no_such_option": 1})
    # Port 8787 busy, as when another sweep runs on the machine: the cluster says nothing of it.
    busy = socket.socket()
    try:
        busy.bind(("0.0.0.0", 8787))
        busy.listen()
    except OSError:
        pass  # already held by another process: busy all the same
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            records = sweep.run_jobs(tiny_jobs() + [bad], tmp_path / "runs", mode="dask", workers=2,
                                     cache_dir=str(cache))
    finally:
        busy.close()
    assert not [w for w in caught if "already in use" in str(w.message)]
    assert [r["status"] for r in records[:-1]] == ["complete"] * 6
    assert records[-1]["status"] == "failed" and "no_such_option" in records[-1]["error"]
    assert scores(records[:-1]) == scores(serial["records"])


def test_rerun_skips_finished_jobs(serial_sweep):
    out, cache, first = serial_sweep
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.nc")}
    assert len(stamps) == 6
    again = sweep.run_jobs(tiny_jobs(), out / "runs", mode="serial", cache_dir=str(cache))
    assert {r["status"] for r in again} == {"skipped"}
    assert scores(again) == scores(first["records"])
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*.nc")}
    assert sweep.pending(tiny_jobs(), out / "runs") == []
    # Nothing pending: no cluster is contacted (this scheduler address does not exist).
    cached = sweep.run_jobs(tiny_jobs(), out / "runs", mode="dask", scheduler="tcp://127.0.0.1:9")
    assert {r["status"] for r in cached} == {"skipped"}


def test_a_rerun_table_says_which_jobs_it_ran_and_which_it_read(serial_sweep):
    out, cache, first = serial_sweep
    assert first["json"]["header"]["jobs_run"] == 6 and "finished earlier" not in first["markdown"]
    again = compare.compare(tiny_jobs(), out, get_registry(), serial=True, cache_dir=str(cache), log=lambda s: None)
    assert "this invocation ran 0 jobs and read 6 from run files finished earlier" in again["markdown"]
    assert scores(again["records"]) == scores(first["records"])


class Raises(Assimilator):
    name = "raises"
    description = "fails at its third analysis"

    def prepare(self, context):
        self.calls = 0

    def assimilate(self, background, observations, operator):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("deliberate failure")
        return background.clone()


class RaisesPlugin:
    @hookimpl
    def da_harness_register(self, registry):
        registry.add_assimilator(Raises)


def test_a_failing_method_is_reported_and_the_others_complete(tmp_path):
    registry = build_registry(extra_plugins=[("raises-plugin", RaisesPlugin())])
    jobs = tiny_jobs(methods=("free", "raises"), seeds=1, cycles=8)
    result = compare.compare(jobs, tmp_path, registry, serial=True, plots=False, log=lambda s: None)
    status = {r["job"]["method"]: r["status"] for r in result["records"]}
    assert status == {"free": "complete", "raises": "failed"}
    (failure,) = result["failed"]
    assert "failed at cycle 2" in failure["error"] and "deliberate failure" in failure["error"]
    assert "## Failed jobs" in result["markdown"] and "deliberate failure" in result["markdown"]
    rows = {r["method"]: r for r in result["tables"][0]["rows"]}
    assert rows["raises"]["seeds"] == 0 and rows["raises"]["failed"] == 1 and rows["free"]["seeds"] == 1


def test_interval_matches_a_hand_computation():
    mean, half, n = statistics.t_interval([1.0, 2.0, 4.0, float("nan")])
    sd = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    assert n == 3 and mean == pytest.approx(7 / 3)
    assert half == pytest.approx(4.302652729911275 * sd / math.sqrt(3))  # t(0.975, 2 dof)
    assert statistics.t_interval([2.5])[:2] == (2.5, pytest.approx(float("nan"), nan_ok=True))


def test_paired_difference_from_the_best_method_is_taken_seed_by_seed():
    def rec(method, seed, rmse):
        return {"job": {"model": "m", "model_options": {}, "obs": "all", "cycles": 5, "method": method, "seed": seed},
                "status": "complete", "summary": {"analysis_rmse": rmse, "members": 1, "burn_in": 1}}
    # b is worse than a by 0.1 on every seed although their own intervals overlap widely.
    records = [rec("a", 0, 1.0), rec("a", 1, 2.0), rec("a", 2, 3.0), rec("b", 0, 1.1), rec("b", 1, 2.1), rec("b", 2, 3.1)]
    (table,) = aggregate.aggregate(records)
    rows = {r["method"]: r for r in table["rows"]}
    assert table["columns"][:2] == ["analysis_rmse", "rmse_minus_best"]
    assert rows["a"]["best"] == "a" and rows["a"]["rmse_minus_best"] == 0
    assert rows["b"]["rmse_minus_best"] == pytest.approx(0.1) and rows["b"]["rmse_minus_best_ci95"] < 1e-9
    assert rows["b"]["analysis_rmse_ci95"] > 2


def test_named_pairs_are_reported_seed_by_seed_and_checked(serial_sweep, cli):
    _, _, result = serial_sweep
    (table,) = aggregate.aggregate(result["records"], [("3dvar", "climatology"), ("3dvar", "absent")])
    (pair,) = table["pairs"]  # a pair with a method missing from the table is left out
    per = {(r["job"]["method"], r["job"]["seed"]): r["summary"]["analysis_rmse"] for r in result["records"]}
    mean, half, n = statistics.t_interval([per[("3dvar", s)] - per[("climatology", s)] for s in range(2)])
    assert (pair["a"], pair["b"], pair["seeds"]) == ("3dvar", "climatology", 2)
    assert pair["analysis_rmse_diff"] == pytest.approx(mean) and pair["analysis_rmse_diff_ci95"] == pytest.approx(half)
    from interfaces import report

    assert "3dvar − climatology: " in report.paired_lines(table)
    code, _, err = cli("compare", "--methods", "free,3dvar", "--pairs", "free:enkf", "--cycles", "5")
    assert code == 2 and "'enkf', which is not compared" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("compare", "--methods", "free,3dvar", "--pairs", "free-3dvar", "--cycles", "5")
    assert code == 2 and "METHOD:OTHER" in err


def test_tables_have_the_promised_columns(serial_sweep):
    out, _, result = serial_sweep
    (table,) = result["tables"]
    assert [r["method"] for r in table["rows"]] == ["free", "climatology", "3dvar"]
    for col in ("analysis_rmse", "background_rmse", "omb_rms", "oma_rms", "train_seconds", "prepare_seconds",
                "seconds_per_cycle", "peak_memory_mb"):
        assert col in table["columns"]
    # Each mean and interval is the t-interval of the per-seed summaries.
    for row in table["rows"]:
        per_seed = [r["summary"]["analysis_rmse"] for r in result["records"] if r["job"]["method"] == row["method"]]
        mean, half, _ = statistics.t_interval(per_seed)
        assert row["seeds"] == 2 and row["analysis_rmse"] == mean and row["analysis_rmse_ci95"] == half
    with open(out / "lorenz96-every2.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == ["free", "climatology", "3dvar"]
    assert float(rows[2]["analysis_rmse_ci95"]) == pytest.approx(table["rows"][2]["analysis_rmse_ci95"])
    md = (out / "lorenz96-every2.md").read_text()
    assert ("| method | members | seeds | stationary | RMSE a | ± time (AR1) | RMSE a − best (paired) | RMSE b |" in md
            and "O-A rms" in md and " ± " in md)
    assert "Scored seeds: 0, 1; tuning seeds: none declared." in md
    import xarray as xr

    with xr.open_dataset(out / "lorenz96-every2.nc") as ds:
        assert list(ds["method"].values) == ["free", "climatology", "3dvar"]
        assert float(ds["analysis_rmse"][0]) == pytest.approx(table["rows"][0]["analysis_rmse"])
        assert ds.attrs["best_method"] == min(table["rows"], key=lambda r: r["analysis_rmse"])["method"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["header"]["commit"] and summary["header"]["machine"]


def test_plots_are_written_as_png(serial_sweep):
    out, _, _ = serial_sweep
    for name in ("lorenz96-every2-rmse.png", "lorenz96-every2-maps.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ensemble_rows_get_spread_skill_and_crps(tmp_path):
    jobs = tiny_jobs(methods=("enkf",), seeds=1, cycles=10, members=8)
    (table,) = compare.compare(jobs, tmp_path, get_registry(), serial=True, plots=False, log=lambda s: None)["tables"]
    row = table["rows"][0]
    assert row["members"] == 8 and math.isfinite(row["spread_skill"]) and row["crps"] > 0


@pytest.mark.parametrize("argv, needle", [
    (["--methods", "free,nosuch"], "unknown method 'nosuch'; valid methods: "),
    (["--model", "nosuch", "--methods", "free"], "unknown model 'nosuch'; valid models: "),
    (["--suite", "nosuch"], "unknown suite 'nosuch'; valid suites: "),
    (["--methods", "free", "--set", "nosuch=1"], "unknown option 'nosuch'"),
])
def test_unknown_names_are_one_line_usage_errors(cli, argv, needle):
    code, stdout, stderr = cli("compare", *argv)
    assert code == 2 and stdout == ""
    assert needle in stderr and len(stderr.strip().splitlines()) == 1


def test_suites_name_every_method_and_both_testbeds():
    for name in ("quick", "full"):
        suite = suites.load_suite(name)
        methods = {m for b in suite["experiments"] for m in b["methods"]}
        assert {"losda", "dps", "l3dvar", "3dvar", "enkf", "letkf"} <= methods
        assert {"lorenz96", "sw"} <= {b["model"] for b in suite["experiments"]}
    full = suites.load_suite("full")
    assert {"random:0.01", "random:0.05"} <= {o for b in full["experiments"] for o in b["obs"]}
    assert "64x128" in {b.get("model_options", {}).get("resolution") for b in full["experiments"]}


def test_suite_blocks_override_defaults_option_by_option():
    merged = suites._merge({"method_options": {"dps": {"preset": "quick"}, "losda": {"preset": "quick"}}},
                            {"method_options": {"dps": {"zeta": 0.2}}, "cycles": 5})
    assert merged == {"method_options": {"dps": {"preset": "quick", "zeta": 0.2}, "losda": {"preset": "quick"}},
                      "cycles": 5}


def test_set_options_are_routed_typed_and_deduplicated():
    from interfaces.cli import build_parser

    args = build_parser().parse_args(["compare", "--methods", "3dvar,enkf,free", "--seeds", "2", "--members", "8",
                                      "--set", "enkf.rtps=0.3", "--set", "b_source=climatology"])
    jobs = suites.build_jobs(args, None, get_registry())
    assert len(jobs) == 6
    opts = {j["method"]: j["method_options"] for j in jobs}
    assert opts == {"3dvar": {"b_source": "climatology"}, "enkf": {"rtps": 0.3}, "free": {}}
    assert {j["method"]: j["members"] for j in jobs} == {"3dvar": None, "enkf": 8, "free": None}
    suite = suites.load_suite("full")
    args = build_parser().parse_args(["compare", "--suite", "full", "--model", "sw", "--methods", "free",
                                      "--set", "resolution=32x64"])
    jobs = suites.build_jobs(args, suite, get_registry())  # the 64x128 block collapses onto 32x64
    # The 64x128 block's seeds are a subset of the 32x64 block's: its jobs are duplicates.
    sw32 = next(b for b in suite["experiments"] if b.get("model_options", {}).get("resolution") == "32x64")
    assert len(jobs) == len({sweep.job_hash(j) for j in jobs}) == 2 * len(sw32["scoring_seeds"])


def test_seconds_by_method_counts_runs_and_each_training_once():
    def rec(method, seed, total, train, status="done", preset="full"):
        job = {"method": method, "model": "sw", "model_options": {}, "seed": seed,
               "method_options": {"preset": preset} if method == "losda" else {}}
        return {"job": job, "status": status, "summary": {"total_seconds": total, "train_seconds": train}}

    records = [rec("losda", 0, 10.0, 300.0), rec("losda", 1, 12.0, 300.0), rec("losda", 2, 11.0, 120.0, preset="quick"),
               rec("3dvar", 0, 4.0, 0.0), rec("3dvar", 1, 5.0, 0.0, status="failed")]
    cost = aggregate.seconds_by_method(records)
    assert cost["losda"] == {"runs": 3, "run_seconds": 33.0, "train_seconds": 420.0}
    assert cost["3dvar"] == {"runs": 1, "run_seconds": 4.0, "train_seconds": 0.0}


def test_tables_option_keeps_only_the_named_tables_and_lists_them_otherwise():
    from interfaces.cli import build_parser

    suite = suites.load_suite("full")
    args = build_parser().parse_args(["compare", "--suite", "full", "--model", "sw", "--methods", "free,letkf",
                                      "--tables", "sw-32x64-random0.05"])
    jobs = suites.build_jobs(args, suite, get_registry())
    assert {(j["model_options"]["resolution"], j["obs"]) for j in jobs} == {("32x64", "random:0.05")}
    # free, letkf at 20 and its two variants (6 and 10 members), on every scoring seed
    assert len(jobs) == 4 * 10
    args = build_parser().parse_args(["compare", "--suite", "full", "--model", "sw", "--tables", "sw-16x32"])
    with pytest.raises(UsageError, match="matches no table.*sw-32x64-random0.01"):
        suites.build_jobs(args, suite, get_registry())


def test_a_job_another_process_is_running_waits_for_it_and_is_then_read_back(tmp_path, capfd):
    """Two sweeps on one folder never write one run file together: while another process holds
    a job's run lock, run_job waits (saying so on stderr), then finds the file that process
    wrote and reads it back instead of running the job again."""
    import subprocess
    import sys
    import textwrap
    import time

    (job,) = tiny_jobs(methods=("3dvar",), seeds=1)
    path = sweep.run_path(tmp_path, job)
    holder = textwrap.dedent(f"""
        import json, sys, time
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parents[1])!r})
        from interfaces import sweep
        job = json.loads({json.dumps(json.dumps(job))})
        with sweep.run_lock({str(path)!r}):
            print("held", flush=True)
            time.sleep(2)
            sweep._run_job(job, __import__("pathlib").Path({str(path)!r}), None, 1, None, False)
    """)
    other = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().strip() == "held"
    t0 = time.perf_counter()
    record = sweep.run_job(job, str(tmp_path))
    waited = time.perf_counter() - t0
    assert other.wait(timeout=120) == 0
    assert record["status"] == "skipped" and waited > 1.5  # the other process's file, read back
    assert "waiting for another process" in capfd.readouterr().err
    assert sorted(p.name for p in tmp_path.glob("*.nc")) == [path.name]  # the lock is not a run file


def test_the_verdict_reads_each_pairs_interval_out():
    from interfaces.report import verdict_line

    pairs = [{"a": "losda", "b": "letkf", "analysis_rmse_diff": 0.03, "analysis_rmse_diff_ci95": 0.01},
             {"a": "dps", "b": "letkf", "analysis_rmse_diff": -0.02, "analysis_rmse_diff_ci95": 0.01},
             {"a": "ensf", "b": "letkf", "analysis_rmse_diff": 0.005, "analysis_rmse_diff_ci95": 0.01},
             {"a": "l3dvar", "b": "letkf", "analysis_rmse_diff": float("nan"), "analysis_rmse_diff_ci95": 0.01}]
    assert verdict_line(pairs) == "Read: letkf ahead of losda, dps ahead of letkf; not separated: ensf and letkf."
    assert verdict_line(pairs[2:3]) == "Read: not separated: ensf and letkf."
    assert verdict_line(pairs[3:]) == ""


def test_the_verdict_follows_the_holm_test_and_says_when_its_interval_disagrees():
    """Holm is the family's test; its Bonferroni-level intervals are wider, so a pair may be
    separated by the test while its printed interval includes 0 (the imperfect-physics table's
    LO-SDA ensemble against LETKF-20: +0.0106 ± 0.013, p(Holm) = 0.022)."""
    from interfaces.report import _reading, verdict_line

    ens = {"a": "losda-ens", "b": "letkf", "analysis_rmse_diff": 0.0106, "analysis_rmse_diff_ci95": 0.013,
           "p": 0.0037, "p_holm": 0.022}
    dps = {"a": "dps", "b": "letkf", "analysis_rmse_diff": 0.03, "analysis_rmse_diff_ci95": 0.01,
           "p": 0.0001, "p_holm": 0.0006}
    close = {"a": "l3dvar", "b": "letkf", "analysis_rmse_diff": -0.004, "analysis_rmse_diff_ci95": 0.01,
             "p": 0.3, "p_holm": 0.6}
    assert verdict_line([ens, dps, close]) == ("Read: letkf ahead of losda-ens (Holm; its Bonferroni interval "
                                               "includes 0), letkf ahead of dps; not separated: l3dvar and letkf.")
    assert _reading(ens, 3) == "letkf ahead (Holm; its Bonferroni interval includes 0)"
    # Alone, a pair is read from its plain p-value (which agrees with its 95 % interval).
    assert verdict_line([dict(close, p=0.01)]) == "Read: l3dvar ahead of letkf."
    assert verdict_line([dict(ens, p=0.2)]) == "Read: not separated: losda-ens and letkf."


def test_no_progress_leaves_out_the_finished_jobs_lines_but_not_the_failures(tmp_path):
    registry = build_registry(extra_plugins=[("raises-plugin", RaisesPlugin())])
    lines = []
    compare.compare(tiny_jobs(methods=("free", "raises"), seeds=1, cycles=8), tmp_path, registry, serial=True,
                    plots=False, log=lines.append, progress=False)
    assert not any("complete" in line for line in lines)
    assert [line for line in lines if "FAILED" in line and "deliberate failure" in line]


def test_jobs_run_part_way_runs_first_then_cheap_rows_and_come_back_in_job_order(tmp_path):
    """A priority orders the jobs still to run (records keep the job order); compare's puts a
    part-way run first, then rows by their measured seconds per cycle, unknown costs last."""
    jobs = tiny_jobs(methods=("3dvar", "free"), seeds=2, cycles=8)
    ran = []
    rank = {"free": 0, "3dvar": 1}
    records = sweep.run_jobs(jobs, tmp_path / "a", mode="serial", registry=get_registry(),
                             log=lambda line: ran.append(line.split(" on ")[0].split()[-1]),
                             priority=lambda job: rank[job["method"]])
    assert ran == ["free", "free", "3dvar", "3dvar"]
    assert [r["job"]["method"] for r in records] == ["3dvar", "3dvar", "free", "free"]
    # compare's key: a part-way run first; then a row whose runs finished, by their seconds per
    # cycle; rows with no estimate last.
    import xarray as xr

    runs = tmp_path / "b" / "runs"
    sweep.run_jobs([jobs[0]], runs, mode="serial", registry=get_registry())  # 3dvar, seed 0
    with xr.open_dataset(sweep.run_path(runs, jobs[0])) as ds:
        part = ds.load().isel(time=slice(0, 3))
    part.attrs = {**part.attrs, "status": "partial", "completed_cycles": 3}
    part.to_netcdf(sweep.run_path(runs, jobs[1]))  # 3dvar, seed 1, part-way
    key = compare.cheap_rows_first(jobs, runs, get_registry(), None)
    assert key(jobs[1])[0] == 0 and key(jobs[0])[0] == 1 and key(jobs[2])[0] == 1
    assert 0 < key(jobs[0])[1] < float("inf") and key(jobs[2])[1] == float("inf")  # 3dvar measured, free not
    assert sorted(jobs, key=key)[0] is jobs[1] and sorted(jobs, key=key)[-1]["method"] == "free"
