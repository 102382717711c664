"""benchmarks/sw_balance.py: vorticity, divergence and height-tendency figures of sphere analyses.
An analysis equal to the truth must have no error and the truth's tendency; a free run's
analysis is its background, so their errors must agree."""

import pytest
import xarray as xr

from interfaces import api

from conftest import load_benchmark

SW_SMALL = {"spinup_days": 1.0, "init_days": 0.5, "clim_members": 40, "clim_spacing": 1}



def test_balance_figures_of_a_free_run_and_of_a_perfect_analysis(tmp_path):
    sw_balance = load_benchmark("sw_balance")
    base = [f"model.{k}={v}" for k, v in SW_SMALL.items()]
    api.run(model="sw", method="free", obs="random:0.05", cycles=4, burn_in=1, seed=3, options=base,
            out=tmp_path / "free.nc")
    free = sw_balance.balance(str(tmp_path / "free.nc"), every=1)
    assert free["cycles"] == 3 and free["method"] == "free"
    assert free["vort_err_a"] == pytest.approx(free["vort_err_b"]) and free["vort_err_a"] > 0
    assert free["div_err_a"] == pytest.approx(free["div_err_b"])
    assert free["dhdt_truth"] > 0 and free["div_truth"] > 0
    with xr.open_dataset(tmp_path / "free.nc") as ds:
        perfect = ds.load()
    for v in ("h", "u", "v"):
        perfect[f"analysis_{v}"] = perfect[f"truth_{v}"].copy()
    perfect.to_netcdf(tmp_path / "perfect.nc")
    exact = sw_balance.balance(str(tmp_path / "perfect.nc"), every=1)
    assert exact["vort_err_a"] == pytest.approx(0, abs=1e-12) and exact["div_err_a"] == pytest.approx(0, abs=1e-12)
    assert exact["dhdt_a"] == pytest.approx(exact["dhdt_truth"]) and exact["div_a"] == pytest.approx(exact["div_truth"])
