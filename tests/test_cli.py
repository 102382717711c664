"""The command line: listings, JSON summaries, one-line errors with exit code 2."""

import json

import pytest
import xarray as xr

from conftest import run_cli


def test_methods_lists_reference_methods_with_their_plugin():
    out = run_cli("methods", check=0).stdout
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert lines["free"] == "baselines" and lines["climatology"] == "baselines"
    listed = json.loads(run_cli("methods", "--json", check=0).stdout)
    assert {"name": "free", "plugin": "baselines"}.items() <= next(m for m in listed if m["name"] == "free").items()


def test_models_lists_testbeds(cli):
    code, out, _ = cli("models")
    assert code == 0 and "lorenz96" in out and "linear" in out


def test_run_writes_a_run_file_and_a_json_summary(tmp_path):
    out = tmp_path / "r.nc"
    proc = run_cli("run", "--model", "lorenz96", "--method", "climatology", "--cycles", "300", "--out", out, "--json", check=0)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("method", "model", "seed", "cycles", "analysis_rmse", "background_rmse", "seconds_per_cycle"):
        assert key in summary
    assert 3.3 < summary["analysis_rmse"] < 3.9
    with xr.open_dataset(out) as ds:
        assert {"truth", "background", "analysis", "analysis_rmse"} <= set(ds.data_vars)
        # Provenance: the commit of the checkout that wrote it ('unknown' outside one).
        from interfaces.provenance import code_commit

        assert ds.attrs["code_commit"] == code_commit() and ds.attrs["code_commit"]


@pytest.mark.parametrize("args,fragment", [
    (["run", "--model", "nope", "--method", "free"], "valid models: linear, lorenz96"),
    (["run", "--method", "nope"], "valid methods:"),
    (["run", "--method", "free", "--set", "foo=1"], "unknown option 'foo'"),
    (["run", "--method", "free", "--set", "forcing=abc"], "expects float"),
    (["run", "--method", "free", "--set", "novalue"], "key=value"),
    (["run", "--method", "free", "--cycles", "0"], "--cycles must be a positive integer"),
    (["run", "--method", "free", "--members", "-3"], "--members must be a positive integer"),
    (["run", "--method", "free", "--obs", "random:0"], "fraction in (0, 1]"),
    (["run", "--method", "free", "--obs-std", "-1"], "finite and positive"),
    (["run", "--method", "free", "--device", "tpu"], "valid devices"),
    (["frobnicate"], "invalid choice"),
    (["--threads", "0", "methods"], "--threads must be a positive integer"),
])
def test_bad_input_is_one_line_with_exit_code_2(cli, args, fragment):
    code, _, err = cli(*args)
    assert code == 2, err
    lines = [l for l in err.splitlines() if not l.startswith("da-harness: warning")]
    assert len(lines) == 1 and lines[0].startswith("da-harness: error:") and fragment in lines[0], err
    assert "Traceback" not in err


def test_bad_input_from_a_real_process_exits_2():
    proc = run_cli("run", "--method", "nope")
    assert proc.returncode == 2 and "unknown method 'nope'" in proc.stderr and "Traceback" not in proc.stderr
