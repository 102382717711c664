"""Slim archived run files (interfaces/archive.py): a sweep restored from them on an empty run
folder reruns nothing and gives the same tables; a partial run is never slimmed; a restore never
replaces a full run file; the copies are much smaller and keep what compare reads."""

import json

import numpy as np
import pytest

xr = pytest.importorskip("xarray")

from interfaces import archive, compare, sweep  # noqa: E402
from interfaces.registry import get_registry  # noqa: E402

OPTIONS = {"3dvar": {"b_source": "climatology"}}


def jobs(model="lorenz96", obs="every:2", cycles=12, methods=("free", "3dvar")):
    return [sweep.make_job(model=model, method=m, obs=obs, cycles=cycles, burn_in=3, seed=s,
                           method_options=OPTIONS.get(m, {}))
            for m in methods for s in range(2)]


def table_numbers(result):
    """The tables' figures but the machine-dependent costs, as text (NaN equals NaN)."""
    return json.dumps([{k: v for k, v in row.items() if k not in ("seconds_per_cycle", "seconds_per_cycle_ci95", "peak_memory_mb",
                                                       "peak_memory_mb_ci95", "prepare_seconds", "prepare_seconds_ci95")}
            for t in result["tables"] for row in t["rows"]], sort_keys=True, default=str)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("first")
    cache = tmp_path_factory.getbasetemp() / "da-cache"
    first = compare.compare(jobs(), out, get_registry(), serial=True, cache_dir=str(cache), log=lambda s: None)
    store = tmp_path_factory.mktemp("archive")
    written = archive.sync(out / "runs", store)
    return out, cache, first, store, written


def test_every_finished_run_is_archived_once(swept):
    out, _, _, store, written = swept
    assert len(written) == len(jobs()) == len(list(store.glob("*.nc")))
    assert archive.sync(out / "runs", store) == []  # same code, already there: nothing rewritten


def test_a_sweep_restored_from_the_archive_reruns_nothing_and_gives_the_same_tables(swept, tmp_path):
    _, cache, first, store, _ = swept
    copied = archive.restore(store, tmp_path / "runs")
    assert len(copied) == len(jobs())
    again = compare.compare(jobs(), tmp_path, get_registry(), serial=True, cache_dir=str(cache), log=lambda s: None)
    assert again["json"]["header"]["jobs_run"] == 0
    assert again["json"]["header"]["jobs_read"] == len(jobs())
    assert table_numbers(again) == table_numbers(first)
    # The per-cycle scores behind the stationarity test come back exactly.
    for a, b in zip(first["records"], again["records"]):
        np.testing.assert_array_equal(a["series"], b["series"])
    assert (tmp_path / "lorenz96-every2-rmse.png").exists()
    assert not (tmp_path / "lorenz96-every2-maps.png").exists()  # no fields to draw maps from


def test_a_slim_copy_keeps_attributes_and_scores_and_drops_the_fields(swept):
    out, _, _, store, _ = swept
    src = sorted((out / "runs").glob("lorenz96-3dvar-*.nc"))[0]
    with xr.open_dataset(src) as full, xr.open_dataset(store / src.name) as small:
        assert archive.is_slim(small) and not archive.is_slim(full)
        assert {k: v for k, v in small.attrs.items() if k not in ("slim", "state_variables")} == dict(full.attrs)
        assert json.loads(small.attrs["summary"]) == json.loads(full.attrs["summary"])
        for name, var in full.data_vars.items():
            if var.dims == ("time",):
                np.testing.assert_array_equal(small[name].values, var.values)
        assert "analysis" not in small and "truth" not in small and "obs_value" not in small
        np.testing.assert_allclose(small["obs_std"].values, np.sqrt((full["obs_std"].values ** 2).mean(0)))
    assert archive.has_fields(src) and not archive.has_fields(store / src.name)


def test_a_slim_sphere_copy_is_small_and_still_plots(tmp_path):
    (job,) = [sweep.make_job(model="sw", method="free", obs="random:0.05", cycles=3, burn_in=1, seed=0,
                             model_options={"resolution": "32x64"})]
    record = sweep.run_job(job, str(tmp_path / "runs"))  # the session's shared cache
    assert record["status"] == "complete", record.get("error")
    src = tmp_path / "runs" / sweep.run_path("", job).name
    dst = archive.slim(src, tmp_path / "slim.nc")
    assert dst.stat().st_size < src.stat().st_size / 5
    from interfaces import plots

    with xr.open_dataset(dst) as ds:
        assert plots._variables(ds) == ["h", "u", "v"]
        assert plots.obs_error_level(ds, "h") == pytest.approx(plots.obs_error_level(xr.open_dataset(src), "h"))
    fig = plots.compare_rmse({"free": [dst]})
    assert len([ax for ax in fig.axes if ax.lines]) == 4  # overall, h, u, v


def test_a_partial_run_is_never_slimmed(swept, tmp_path):
    out, *_ = swept
    src = sorted((out / "runs").glob("*.nc"))[0]
    with xr.open_dataset(src) as ds:
        partial = ds.load()
    partial.attrs["status"] = "partial"
    partial.to_netcdf(tmp_path / "runs.nc")
    with pytest.raises(ValueError, match="only a complete run file"):
        archive.slim(tmp_path / "runs.nc", tmp_path / "slim.nc")
    (tmp_path / "dir").mkdir()
    partial.to_netcdf(tmp_path / "dir" / "p.nc")
    assert archive.sync(tmp_path / "dir", tmp_path / "store") == []


def test_a_restore_never_replaces_a_full_run_file(swept, tmp_path):
    out, _, _, store, _ = swept
    run_dir = tmp_path / "runs"
    run_dir.mkdir()
    name = sorted(store.glob("*.nc"))[0].name
    (run_dir / name).write_bytes((out / "runs" / name).read_bytes())
    copied = archive.restore(store, run_dir)
    assert run_dir / name not in copied and len(copied) == len(jobs()) - 1
    assert archive.has_fields(run_dir / name)


def test_slimming_a_run_folder_in_place_keeps_what_a_rerun_reads(swept, tmp_path):
    """A tuning search's folder, slimmed after the search: complete files lose their fields and
    are read back as finished, with the same summaries and per-cycle scores; a partial file
    keeps its fields (it resumes from them); a second pass has nothing left to do."""
    import shutil

    out, cache, first, _, _ = swept
    runs = tmp_path / "runs"
    shutil.copytree(out / "runs", runs)
    partial_job = jobs()[0]
    with xr.open_dataset(sweep.run_path(runs, partial_job)) as ds:
        done = ds.load()
    part = done.isel(time=slice(0, 5))
    part.attrs = {**done.attrs, "status": "partial", "completed_cycles": 5}
    sweep.run_path(runs, partial_job).unlink()
    part.to_netcdf(sweep.run_path(runs, partial_job))

    count, freed = archive.slim_in_place(runs)
    assert count == len(jobs()) - 1 and freed > 0
    assert archive.has_fields(sweep.run_path(runs, partial_job))
    assert archive.slim_in_place(runs) == (0, 0)
    for job, record in zip(jobs()[1:], first["records"][1:]):
        again = sweep.finished_record(job, runs)
        assert again["status"] == "skipped" and again["summary"] == record["summary"]
        assert not archive.has_fields(again["file"])
        np.testing.assert_array_equal(sweep.scored_series(again["file"], 3), record["series"])
