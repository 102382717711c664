"""`benchmarks/rerun_full.py --status`: a method's tuning so far, read from the archive's slim
copies (and the local tune runs) or from its tuned entry, without running anything."""

import pytest
import xarray as xr

from interfaces import archive, equivalence, sweep
from interfaces.registry import get_registry

from conftest import load_benchmark


@pytest.fixture(scope="module")
def rerun_full():
    return load_benchmark("rerun_full")


def job(scale, seed):
    return sweep.make_job(model="lorenz96", method="3dvar", obs="every:2", cycles=12, burn_in=3, seed=seed,
                          method_options={"scale": scale, "b_source": "climatology"})


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A 3dvar search on lorenz96: scales 1 and 2 finished on seeds 100 and 101 (slim copies in
    the archive), scale 4 part-way on seed 100 and finished by other code on seed 101."""
    root, table = tmp_path_factory.mktemp("status"), "lorenz96-every2"
    repo = root / "repo"  # the driver's ROOT: local tune runs go to runs/tune/<table>-<method>/runs
    runs = repo / "runs" / "tune" / f"{table}-3dvar" / "runs"
    jobs = [job(s, seed) for s in (1.0, 2.0, 4.0) for seed in (100, 101)]
    records = sweep.run_jobs(jobs, runs, mode="serial", registry=get_registry(),
                             cache_dir=str(tmp_path_factory.getbasetemp() / "da-cache"))
    rmse = {(r["job"]["method_options"]["scale"], r["job"]["seed"]): r["summary"]["analysis_rmse"] for r in records}
    with xr.open_dataset(sweep.run_path(runs, job(4.0, 100))) as ds:
        full = ds.load()
    partial = full.isel(time=slice(0, 5))
    partial.attrs = {**full.attrs, "status": "partial", "completed_cycles": 5}
    sweep.run_path(runs, job(4.0, 100)).unlink()
    partial.to_netcdf(sweep.run_path(runs, job(4.0, 100)))
    with xr.open_dataset(sweep.run_path(runs, job(4.0, 101))) as ds:
        other = ds.load()
    other.attrs["code_version"] = "0123456789abcdef"
    sweep.run_path(runs, job(4.0, 101)).unlink()
    other.to_netcdf(sweep.run_path(runs, job(4.0, 101)))
    out_root = root / "results"
    archive_dir = out_root / "archive" / "tune" / f"{table}-3dvar"
    archive.sync(runs, archive_dir)  # the complete ones: scales 1 and 2, and the stale scale-4 file
    for p in runs.glob("*.nc"):  # the part-way run stays in the local tune folder only
        if p.name != sweep.run_path(runs, job(4.0, 100)).name:
            p.unlink()
    return {"repo": repo, "table": table, "out_root": out_root, "rmse": rmse}


def test_status_reports_the_search_so_far(rerun_full, searched, monkeypatch):
    local = searched["repo"]
    monkeypatch.setattr(rerun_full, "ROOT", local)
    line = rerun_full.tune_status(searched["table"], "3dvar", "lorenz96", str(searched["out_root"]),
                                  local / "absent.toml", [100, 101])
    rmse = searched["rmse"]
    means = {s: (rmse[(s, 100)] + rmse[(s, 101)]) / 2 for s in (1.0, 2.0)}
    best = min(means, key=means.get)
    assert "not tuned yet; 2 setting(s) finished on seeds 100,101" in line
    assert f"best so far scale {best}: {means[best]:.4g}" in line
    assert "part-way: scale 4.0 seed 100 at cycle 5" in line
    assert "1 run(s) made by other code" in line


def test_status_quotes_a_tuned_entry(rerun_full, tmp_path):
    tuned_file = tmp_path / "tuned.toml"
    tuned_file.write_text(
        '[[entry]]\ntable = "lorenz96-every2"\nmethod = "3dvar"\nseeds = [100, 101]\nscore = 1.25\n'
        '[entry.chosen]\nscale = 2.0\n[[entry.search]]\nscore = 1.25\n[[entry.search]]\nscore = 1.5\n')
    line = rerun_full.tune_status("lorenz96-every2", "3dvar", "lorenz96", str(tmp_path), tuned_file, [100, 101])
    assert line.strip() == "3dvar: tuned (scale 2.0): 1.25 on seeds 100,101, 2 settings searched"


def test_status_says_what_a_tolerance_gave_up(rerun_full, tmp_path):
    tuned_file = tmp_path / "tuned.toml"
    tuned_file.write_text(
        '[[entry]]\ntable = "t"\nmethod = "dps"\nseeds = [100, 101]\nscore = 0.1987\ntolerance = 0.01\n'
        'chosen = { zeta = 1.0, steps = 40 }\nlowest = { options = { zeta = 1.0, steps = 80 }, score = 0.1981 }\n'
        '[[entry.search]]\nscore = 0.1987\n[[entry.search]]\nscore = 0.1981\n')
    line = rerun_full.tune_status("t", "dps", "sw", str(tmp_path), tuned_file, [100, 101])
    assert line.strip() == ("dps: tuned (zeta 1.0, steps 40): 0.1987 on seeds 100,101, 2 settings searched; "
                            "the lowest, zeta 1.0, steps 80, 0.1981, is within its 1% tolerance")


def test_a_variant_at_another_ensemble_size_gets_a_search_of_its_own(rerun_full):
    """The small LETKF of a regimes table is tuned at its own size (no row runs a size nobody
    tuned), in a folder of its own; a variant's own options stay fixed and leave the grid;
    sizeless methods (the latent ones) are searched once."""
    block = {"members": {"letkf": 20}, "method_options": {"losda": {"preset": "full"}},
             "variants": {"letkf": [{"members": 6}, {"members": 10, "inflation": 1.1}, {"radius": 3000.0}],
                          "losda": [{"members": 20, "rtps": 0.5}]}}
    letkf = list(rerun_full.searches("t", block, "letkf", "sw"))
    assert [(f, m) for f, m, *_ in letkf] == [("t-letkf", 20), ("t-letkf-members6", 6), ("t-letkf-members10", 10)]
    grids = rerun_full.GRIDS["sw"]["letkf"][1]
    assert letkf[1][2:] == ({}, grids, False)  # the LETKF is tuned by RMSE alone, as before
    assert letkf[2][2] == {"inflation": 1.1} and letkf[2][3] == [g for g in grids if not g.startswith("inflation=")]
    assert [f for f, *_ in rerun_full.searches("t", block, "losda", "sw")] == ["t-losda"]
    regimes = {name: block for name, _, _, block, _ in rerun_full.tables("regimes", None, None)}
    for name, b in regimes.items():  # every regimes table that runs a small LETKF tunes it
        sizes = [20, 6] if "fbias" not in name else [20]  # the reanalysis-data table runs 20 only
        assert [m for _, m, *_ in rerun_full.searches(name, b, "letkf", "sw")] == sizes
    full = {name: block for name, _, _, block, _ in rerun_full.tables("full", "sw-32x64", None)}
    assert len(full) == 2
    for name, b in full.items():  # and the full suite's 32x64 tables their 6- and 10-member ones
        assert [m for _, m, *_ in rerun_full.searches(name, b, "letkf", "sw")] == [20, 6, 10]


def test_status_tells_the_searches_of_one_method_apart_by_size(rerun_full, tmp_path):
    tuned_file = tmp_path / "tuned.toml"
    tuned_file.write_text(
        '[[entry]]\ntable = "t"\nmethod = "letkf"\nmembers = 20\nseeds = [100, 101]\nscore = 0.15\n'
        'chosen = { inflation = 1.0 }\n[[entry.search]]\nscore = 0.15\n')
    base = rerun_full.tune_status("t", "letkf", "sw", str(tmp_path), tuned_file, [100, 101], "t-letkf", 20)
    small = rerun_full.tune_status("t", "letkf", "sw", str(tmp_path), tuned_file, [100, 101], "t-letkf-members6", 6)
    assert base.strip().startswith("letkf: tuned (inflation 1.0): 0.15")
    assert small.strip().startswith("letkf at 6 members: not tuned yet; 0 setting(s) finished")


def test_status_says_when_a_tuned_method_is_searched_again(rerun_full, searched, monkeypatch):
    """An entry whose folder holds a run part-way (its search running again) says so."""
    local = searched["repo"]
    monkeypatch.setattr(rerun_full, "ROOT", local)
    tuned_file = local / "tuned.toml"
    tuned_file.write_text(
        f'[[entry]]\ntable = "{searched["table"]}"\nmethod = "3dvar"\nseeds = [100, 101]\nscore = 1.25\n'
        '[entry.chosen]\nscale = 2.0\n[[entry.search]]\nscore = 1.25\n')
    line = rerun_full.tune_status(searched["table"], "3dvar", "lorenz96", str(searched["out_root"]), tuned_file,
                                  [100, 101])
    assert line.strip().startswith("3dvar: tuned (scale 2.0): 1.25")
    assert line.endswith("; searched again now, part-way: scale 4.0 seed 100 at cycle 5")


def test_status_counts_the_settings_a_search_recorded_as_failed(rerun_full, searched, monkeypatch, tmp_path):
    """A diverged setting is finished (its failure recorded, interfaces/failures.py); one recorded
    by other code is not counted."""
    from interfaces import failures

    local = tmp_path / "repo"
    runs = local / "runs" / "tune" / f"{searched['table']}-3dvar" / "runs"
    code = sweep.job_code_version(job(8.0, 100))
    failures.write(sweep.run_path(runs, job(8.0, 100)), code, "PluginError: diverged", job(8.0, 100))
    failures.write(sweep.run_path(runs, job(16.0, 100)), "0123456789abcdef", "PluginError: old", job(16.0, 100))
    monkeypatch.setattr(rerun_full, "ROOT", local)
    line = rerun_full.tune_status(searched["table"], "3dvar", "lorenz96", str(searched["out_root"]),
                                  local / "absent.toml", [100, 101])
    assert "2 setting(s) finished" in line and "1 setting(s) failed (diverged) on a tuning seed, as recorded" in line


def test_archive_root_sends_the_slim_copies_to_another_checkout(rerun_full, tmp_path, monkeypatch):
    """A campaign run from a detached worktree (--archive-root MAIN) restores from and syncs to the
    main checkout's archive, so its own checkout stays clean; the log names the folder in full."""
    worktree, main = tmp_path / "worktree", tmp_path / "main"
    (main / "benchmarks").mkdir(parents=True)
    monkeypatch.setattr(rerun_full, "ROOT", worktree)
    root = rerun_full.archive_root(type("Args", (), {"archive_root": str(main)})())
    assert root == main.resolve()
    assert rerun_full.archive_root(type("Args", (), {"archive_root": None})()) == worktree

    runs, out = worktree / "runs" / "compare", "benchmarks/results/regimes"
    finished = job(1.0, 100)
    sweep.run_jobs([finished], runs, mode="serial", registry=get_registry(), cache_dir=str(tmp_path / "da-cache"))
    lines = []
    store = rerun_full.Archive(lines.append, every=3600)
    store.track(runs, root / out / "archive" / "compare")
    store.sync()
    copied = root / out / "archive" / "compare" / sweep.run_path(runs, finished).name
    assert copied.is_file() and not (worktree / out).exists()
    assert lines == [f"  archived 1 finished run(s) in {root / out / 'archive' / 'compare'}"]

    # A fresh worktree (no run files) gets the finished run back from the other checkout.
    fresh_runs = worktree / "runs" / "fresh"
    lines.clear()
    store.track(fresh_runs, root / out / "archive" / "compare")
    assert (fresh_runs / copied.name).is_file()
    assert lines == [f"  restored 1 finished run(s) from {root / out / 'archive' / 'compare'}"]


def test_archive_root_that_is_not_a_checkout_is_refused(rerun_full, tmp_path):
    with pytest.raises(SystemExit, match=r"--archive-root .*nowhere is not a da-harness checkout"):
        rerun_full.archive_root(type("Args", (), {"archive_root": str(tmp_path / "nowhere")})())


def test_a_driver_older_than_its_archive_root_is_refused(rerun_full, tmp_path, monkeypatch):
    """A driver whose equivalence record lacks a declaration the archive root's has would take
    the newer code's runs for stale and run them again (it happened on 2026-12-06): refused,
    naming the declaration; a driver as new or newer than the archive root goes on."""
    worktree, main = tmp_path / "worktree", tmp_path / "main"
    for root in (worktree, main):
        (root / "benchmarks").mkdir(parents=True)
        (root / "interfaces").mkdir()
    entry = ('[[equivalent]]\nold = "{}"\nnew = "{}"\nwhy = "x"\ncommits = "a..b"\n'
             'verified = [{{ file = "r.nc", cycles = 1 }}]\n\n')
    (worktree / "interfaces" / "code_equivalence.toml").write_text(entry.format("aaaa", "bbbb"))
    (main / "interfaces" / "code_equivalence.toml").write_text(entry.format("aaaa", "bbbb") + entry.format("bbbb", "cccc"))
    monkeypatch.setattr(rerun_full, "ROOT", worktree)
    args = type("Args", (), {"archive_root": str(main)})()
    with pytest.raises(SystemExit, match=r"declares 1 code equivalence\(s\) this checkout does not know "
                                         r"\(e.g. bbbb -> cccc\)"):
        rerun_full.archive_root(args)
    (worktree / "interfaces" / "code_equivalence.toml").write_text(
        entry.format("aaaa", "bbbb") + entry.format("bbbb", "cccc") + entry.format("cccc", "dddd"))
    equivalence.clear_cache()  # records are read once
    assert rerun_full.archive_root(args) == main.resolve()


def test_a_latent_ensemble_searches_its_own_grid_with_the_one_member_choice_held(rerun_full, tmp_path):
    """ensemble_grids: the LO-SDA ensemble's RTPS is searched at its size once the one-member
    search has chosen, with that choice fixed; compare then gives the ensemble row both."""
    from interfaces import suites

    block = {"method_options": {"losda": {"preset": "full"}}, "variants": {"losda": [{"members": 20}]},
             "ensemble_grids": {"losda": ["rtps=0.5,0.7,0.9"]}}
    tuned_file = tmp_path / "tuned.toml"
    assert [f for f, *_ in rerun_full.searches("t", block, "losda", "sw", tuned_file)] == ["t-losda"]
    tuned_file.write_text('[[entry]]\ntable = "t"\nmethod = "losda"\nseeds = [100, 101]\n'
                          'chosen = { output = "increment", prox = 0.1, steps = 40 }\n\n'
                          '[[entry]]\ntable = "t"\nmethod = "losda"\nmembers = 20\nseeds = [100, 101]\n'
                          'chosen = { rtps = 0.7 }\n')
    found = list(rerun_full.searches("t", block, "losda", "sw", tuned_file))
    assert found[1] == ("t-losda-members20", 20, {"preset": "full", "output": "increment", "prox": 0.1, "steps": 40},
                        ["rtps=0.5,0.7,0.9"], True)  # a calibration control: tune --calibrate
    assert found[0][4] is False
    assert len(list(rerun_full.searches("t", {**block, "ensemble_grids": {}}, "losda", "sw", tuned_file))) == 1
    entries = __import__("interfaces.tuned", fromlist=["read"]).read(tuned_file)
    ensemble = suites._tuned_options(entries, tuned_file, "t", "losda", 20, [2000], {}, variant=True)
    assert ensemble == {"output": "increment", "prox": 0.1, "steps": 40, "rtps": 0.7}
    assert suites._tuned_options(entries, tuned_file, "t", "losda", None, [2000], {}) == {
        "output": "increment", "prox": 0.1, "steps": 40}


def test_the_driver_never_touches_run_files_from_two_threads_at_once(rerun_full, tmp_path, monkeypatch):
    """HDF5 is not thread-safe: the archive thread's sync, a restore and the main thread's
    slimming of a finished search each hold the driver's one run-file lock (a sync that ran during
    a slim killed the driver with a segmentation fault in libhdf5 on 2026-12-07)."""
    held = []

    def records_lock(name, result):
        def call(*args, **kwargs):
            held.append((name, rerun_full.RUN_FILES.locked()))
            return result
        return call

    monkeypatch.setattr(archive, "restore", records_lock("restore", []))
    monkeypatch.setattr(archive, "sync", records_lock("sync", []))
    monkeypatch.setattr(archive, "slim_in_place", records_lock("slim", (0, 0)))
    monkeypatch.setattr(rerun_full, "ROOT", tmp_path)
    store = rerun_full.Archive(lambda line: None, every=3600)
    store.track(tmp_path / "runs", tmp_path / "archive")
    store.sync()
    rerun_full.slim_tune_runs(tmp_path / "runs", lambda line: None)
    assert held == [("restore", True), ("sync", True), ("slim", True)]
    assert not rerun_full.RUN_FILES.locked()


def test_a_table_searches_its_extra_grids_beside_the_methods_own(rerun_full, tmp_path):
    """extra_grids: a table adds options to a method's searches (at every size it runs), before
    GRIDS' lists (descent moves them first); other methods and tables keep their grids."""
    block = {"members": {"letkf": 20}, "variants": {"letkf": [{"members": 6}]},
             "extra_grids": {"losda": ["iters=5,10,20"], "letkf": ["halo=0,1"]}}
    (_, _, _, grids, _), = rerun_full.searches("t", block, "losda", "sw")
    assert grids == ["iters=5,10,20", *rerun_full.GRIDS["sw"]["losda"][1]]
    letkf = list(rerun_full.searches("t", block, "letkf", "sw"))
    assert [f for f, *_ in letkf] == ["t-letkf", "t-letkf-members6"]
    assert all(g[0] == "halo=0,1" for _, _, _, g, _ in letkf)
    (_, _, _, dps, _), = rerun_full.searches("t", block, "dps", "sw")
    assert dps == rerun_full.GRIDS["sw"]["dps"][1]
    (_, _, _, plain, _), = rerun_full.searches("t", {}, "losda", "sw")
    assert plain == rerun_full.GRIDS["sw"]["losda"][1]
    with pytest.raises(SystemExit, match="extra_grids for losda names prox, which its search already has"):
        list(rerun_full.searches("t", {"extra_grids": {"losda": ["prox=0.1,0.05"]}}, "losda", "sw"))
