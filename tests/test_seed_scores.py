"""Each seed's scores beside a table's means (interfaces/seed_scores.py): the row's per-seed
entries are the run summaries' own figures, a trending window is marked, a seed a row lacks is
missing (not zero), and the .csv, .nc and .md written by compare carry them."""

import csv
import math

import numpy as np
import pytest
import xarray as xr

from interfaces import aggregate, report, seed_scores, statistics


def rmse_series(n, rng, trend=0.0):
    return 0.1 * np.exp(0.05 * rng.normal(size=n) + trend * np.arange(n) / n)


def rec(method, seed, rmse, series=None, status="complete"):
    r = {"job": {"model": "m", "model_options": {}, "obs": "all", "cycles": 120, "method": method, "seed": seed},
         "status": status,
         "summary": {"analysis_rmse": rmse, "analysis_rmse_h": 10 * rmse, "background_rmse": 2 * rmse,
                     "seconds_per_cycle": 0.5, "members": 1, "burn_in": 1}}
    if series is not None:
        r["series"] = series
    return r


@pytest.fixture
def table():
    rng = np.random.default_rng(7)
    records = [rec("a", s, 0.10 + 0.01 * s, rmse_series(120, rng)) for s in (3, 1, 2)]  # out of order on purpose
    records += [rec("b", 1, 0.20, rmse_series(120, rng)), rec("b", 2, 0.30, rmse_series(120, rng, trend=-1.5)),
                rec("b", 3, float("nan"), status="failed")]
    (t,) = aggregate.aggregate(records, [("a", "b")])
    return t


def test_a_rows_seeds_are_its_runs_own_figures_in_seed_order(table):
    rows = {r["method"]: r for r in table["rows"]}
    a, b = rows["a"]["per_seed"], rows["b"]["per_seed"]
    assert [e["seed"] for e in a] == [1, 2, 3] and [e["seed"] for e in b] == [1, 2]  # the failed seed is left out
    assert [e["analysis_rmse"] for e in a] == pytest.approx([0.11, 0.12, 0.13])
    assert a[0]["analysis_rmse_h"] == pytest.approx(1.1) and a[0]["background_rmse"] == pytest.approx(0.22)
    assert "seconds_per_cycle" not in a[0]  # costs stay with the row means
    # The row mean is the mean of its seeds, and the paired difference pairs them seed by seed.
    assert rows["a"]["analysis_rmse"] == pytest.approx(np.mean([e["analysis_rmse"] for e in a]))
    (pair,) = table["pairs"]
    assert pair["analysis_rmse_diff"] == pytest.approx(np.mean([0.11 - 0.20, 0.12 - 0.30]))
    # Seed 2 of b falls by a factor e^1.5 over its window: marked; the flat windows are not.
    assert b[1]["stationary"] is False and b[1]["trend_p"] < statistics.ALPHA
    assert all(e["stationary"] is True for e in a)


def test_a_run_without_per_cycle_scores_is_not_claimed_stationary():
    (t,) = aggregate.aggregate([rec("a", 0, 0.1)])
    (entry,) = t["rows"][0]["per_seed"]
    assert entry["stationary"] is None and math.isnan(entry["trend_p"])


def test_compare_writes_the_seeds_to_csv_netcdf_and_markdown(table, tmp_path):
    files = report.write_all([table], [], tmp_path, {"commit": "x"}, plots=False)
    stem = tmp_path / table["name"]
    assert tmp_path / f"{table['name']}-seeds.csv" in files
    with open(f"{stem}-seeds.csv") as fh:
        lines = list(csv.DictReader(fh))
    assert [(r["method"], int(r["seed"])) for r in lines] == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2)]
    assert float(lines[3]["analysis_rmse"]) == pytest.approx(0.20) and lines[4]["stationary"] == "False"

    with xr.open_dataset(f"{stem}.nc") as ds:
        grid = ds["analysis_rmse_by_seed"].load()
    assert list(grid["seed"].values) == [1, 2, 3] and list(grid.dims) == ["method", "seed"]
    # (sel's own keyword 'method' shadows the dimension: select it with a dict)
    assert grid.sel({"method": "a"}).values == pytest.approx([0.11, 0.12, 0.13])
    assert grid.sel({"method": "b", "seed": 2}).item() == pytest.approx(0.30)
    assert math.isnan(grid.sel({"method": "b", "seed": 3}).item())  # failed: missing, not zero

    md = open(f"{stem}.md").read()
    assert "| method | 1 | 2 | 3 |" in md
    assert "| a | 0.11 | 0.12 | 0.13 |" in md and "| b | 0.2 | 0.3* | – |" in md


def test_no_seed_grid_without_an_analysis_rmse():
    t = {"columns": ["seconds_per_cycle"], "rows": [{"method": "a", "per_seed": [{"seed": 0}]}]}
    assert seed_scores.markdown(t) == ""
