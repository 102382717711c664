"""The Python API (interfaces.api.run): the run file's Dataset, the CLI's errors as exceptions."""

import json

import pytest
import torch
import xarray as xr

from interfaces import api
from interfaces.errors import DataError, UsageError


def without_history(ds: xr.Dataset) -> xr.Dataset:
    """The write time stamp is the one attribute two builds of the same run differ in."""
    ds = ds.copy()
    ds.attrs.pop("history", None)
    return ds


def test_run_returns_the_run_file_it_writes(tmp_path):
    out = tmp_path / "run.nc"
    ds = api.run(model="lorenz96", method="enkf", obs="every:2", cycles=6, seed=2, members=10,
                 options={"inflation": 1.05}, out=out)
    with xr.open_dataset(out, decode_times=False) as written:
        written = written.load()
    assert without_history(ds).identical(without_history(written))
    summary = json.loads(ds.attrs["summary"])
    assert summary["method"] == "enkf" and summary["members"] == 10 and summary["analysis_rmse"] > 0
    assert json.loads(ds.attrs["method_options"])["inflation"] == 1.05


def test_run_matches_the_command_line(cli, tmp_path):
    out = tmp_path / "cli.nc"
    code, _, err = cli("run", "--method", "3dvar", "--cycles", 5, "--seed", 1, "--set", "scale=3",
                       "--out", out, "--no-progress")
    assert code == 0, err
    ds = api.run(method="3dvar", cycles=5, seed=1, options=["scale=3"])
    with xr.open_dataset(out, decode_times=False) as written:
        written = written.load()
    for name in ("truth", "analysis", "background", "obs_value", "analysis_rmse"):
        assert ds[name].equals(written[name]), name


def test_run_uses_one_thread_by_default_and_restores_the_callers():
    torch.set_num_threads(1)
    seen = []
    real = torch.set_num_threads

    def spy(n):
        seen.append(n)
        real(n)

    torch.set_num_threads = spy
    try:
        api.run(cycles=2)
        api.run(cycles=2, threads=2)
    finally:
        torch.set_num_threads = real
    assert seen == [1, 1, 2, 1]


@pytest.mark.parametrize("kwargs,error,fragment", [
    ({"method": "no-such"}, UsageError, "unknown method 'no-such'; valid methods: "),
    ({"method": "3dvar,enkf"}, UsageError, "da-harness compare --methods 3dvar,enkf"),
    ({"method": "enkf", "options": {"inflation": -3}}, UsageError, "must be > 0"),
    ({"options": {"nonsense": 1}}, UsageError, "unknown option 'nonsense'"),
    ({"observations": "/no/such/file.nc"}, DataError, "does not exist"),
    ({"threads": 0}, UsageError, "threads must be a positive integer"),
])
def test_run_raises_what_the_command_line_reports(kwargs, error, fragment):
    with pytest.raises(error, match=fragment.replace("(", r"\(")):
        api.run(cycles=2, **kwargs)


def test_run_takes_exactly_experiments_keywords_and_threads():
    import inspect

    run_keys = set(inspect.signature(api.run).parameters)
    assert run_keys == set(inspect.signature(api.experiment).parameters) | {"threads"}
    assert "train_steps" in run_keys  # was missing from run() when it repeated the list
    with pytest.raises(TypeError, match="unknown keyword.*cycels.*valid: threads"):
        api.run(cycels=2)
