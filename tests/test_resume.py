"""Resumable runs: a run killed at any moment leaves a file that opens and holds only complete
cycles, and --resume continues it to exactly the uninterrupted result."""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

from conftest import ROOT
from interfaces import io
from interfaces.harness import Experiment, run_experiment

#: Run-file content that legitimately differs between two identical runs.
TIMING = {"seconds", "diag_seconds"}


def assert_same_run(path, ref_path):
    """Every variable equal bit for bit (timings aside), and the same completed cycles."""
    with xr.open_dataset(path) as a, xr.open_dataset(ref_path) as b:
        assert a.attrs["status"] == b.attrs["status"] == "complete"
        assert set(a.data_vars) == set(b.data_vars)
        for name in a.data_vars:
            if name in TIMING:
                continue
            assert np.array_equal(a[name].values, b[name].values, equal_nan=a[name].dtype.kind == "f"), name
        for key in ("settings", "completed_cycles", "method_options"):
            assert a.attrs[key] == b.attrs[key], key


def assert_complete_cycles(path, cycles):
    """The file opens, and every cycle it claims is fully written."""
    with xr.open_dataset(path) as ds:
        n = int(ds.attrs["completed_cycles"])
        assert ds.sizes["time"] == n and 0 < n <= cycles
        assert ds.attrs["status"] == ("complete" if n == cycles else "partial")
        for name in ("truth", "background", "analysis", "obs_value", "analysis_rmse", "obs_used"):
            assert np.isfinite(ds[name].values).all(), name
        assert list(ds["cycle"].values) == list(range(n))
        return n


class Killed(BaseException):
    """Stands in for SIGKILL inside this process (nothing after it runs)."""


def kill_after_writes(monkeypatch, writes):
    real = io.write_run
    count = {"n": 0}

    def write_then_die(*args, **kw):
        real(*args, **kw)
        count["n"] += 1
        if count["n"] == writes:
            raise Killed

    monkeypatch.setattr(io, "write_run", write_then_die)


@pytest.mark.parametrize("kw", [
    dict(method="3dvar", method_options={"b_source": "nmc"}),  # deterministic; draws in prepare
    dict(method="enkf", members=8, method_options={"variant": "stochastic"}),  # random every cycle
    dict(method="letkf", members=6, obs="every:2"),  # ensemble: spread fields and scores
])
def test_resume_in_process_equals_the_uninterrupted_run(tmp_path, monkeypatch, kw):
    cycles = 8
    ref = tmp_path / "ref.nc"
    run_experiment(Experiment(cycles=cycles, out=str(ref), **kw))
    out = tmp_path / "killed.nc"
    with monkeypatch.context() as m:
        kill_after_writes(m, 3)
        with pytest.raises(Killed):
            run_experiment(Experiment(cycles=cycles, out=str(out), checkpoint_every=2, **kw))
    assert assert_complete_cycles(out, cycles) == 6
    run_experiment(Experiment(cycles=cycles, out=str(out), resume=True, **kw))
    assert_same_run(out, ref)


def start_run(args, out):
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-m", "interfaces.cli", "run", *map(str, args), "--out", str(out),
                             "--checkpoint-every", "1", "--no-progress"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(path, proc, timeout=120.0):
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before writing {path}: {proc.stderr.read()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"no {path} after {timeout} s")
        time.sleep(0.02)


@pytest.mark.parametrize("args", [
    ["--method", "free", "--cycles", 400],
    ["--method", "enkf", "--members", 8, "--set", "variant=stochastic", "--cycles", 300],
], ids=["free", "enkf-stochastic"])
def test_sigkill_at_a_random_point_then_resume(tmp_path, cli, args):
    rng = random.Random()
    delay = rng.uniform(0.0, 1.5)
    out = tmp_path / "run.nc"
    proc = start_run(args, out)
    try:
        wait_for(out, proc)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    note = f"(killed {delay:.2f} s after the first write; exit {proc.returncode})"
    cycles = args[args.index("--cycles") + 1]
    n = assert_complete_cycles(out, cycles)
    assert n < cycles, f"the run finished before the kill {note}; lengthen it"
    code, _, err = cli("run", *args, "--out", out, "--resume", "--no-progress")
    assert code == 0, err
    ref = tmp_path / "ref.nc"
    code, _, err = cli("run", *args, "--out", ref, "--no-progress")
    assert code == 0, err
    assert_same_run(out, ref)


KILL_MID_WRITE = """
import os, signal, sys
import xarray as xr
from interfaces import cli
real, calls = xr.Dataset.to_netcdf, [0]
def to_netcdf(self, path, *a, **kw):
    real(self, path, *a, **kw)
    calls[0] += 1
    if calls[0] == 4:  # the fourth write: half a temporary file, then SIGKILL before the rename
        size = os.path.getsize(path)
        with open(path, 'r+b') as fh:
            fh.truncate(size // 2)
        os.kill(os.getpid(), signal.SIGKILL)
xr.Dataset.to_netcdf = to_netcdf
sys.exit(cli.main(sys.argv[1:]))
"""


def test_sigkill_during_a_write_leaves_the_previous_file(tmp_path):
    out = tmp_path / "run.nc"
    proc = subprocess.run([sys.executable, "-c", KILL_MID_WRITE, "run", "--method", "free", "--cycles", "10",
                           "--out", str(out), "--checkpoint-every", "1", "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert assert_complete_cycles(out, 10) == 3  # the three writes before the killed one
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert leftovers, "the killed write should have left its temporary file"
    with pytest.raises(Exception):  # noqa: B017 - the temporary is half a file, never the run file
        xr.open_dataset(leftovers[0]).load()
    run_experiment(Experiment(method="free", cycles=10, out=str(out), resume=True))
    ref = tmp_path / "ref.nc"
    run_experiment(Experiment(method="free", cycles=10, out=str(ref)))
    assert_same_run(out, ref)


@pytest.mark.parametrize("stage", ["to_netcdf", "fsync", "replace"])
def test_a_failure_at_any_stage_of_a_write_keeps_the_previous_file(tmp_path, monkeypatch, stage):
    out = tmp_path / "run.nc"
    with monkeypatch.context() as m:
        kill_after_writes(m, 2)
        with pytest.raises(Killed):
            run_experiment(Experiment(method="free", cycles=6, out=str(out), checkpoint_every=1))
    before = out.read_bytes()
    target = {"to_netcdf": (xr.Dataset, "to_netcdf"), "fsync": (io.os, "fsync"), "replace": (io.os, "replace")}[stage]
    real = getattr(*target)

    def fail(*args, **kw):
        if stage == "to_netcdf":
            real(*args, **kw)  # the whole temporary, then die before anything else
        raise Killed

    monkeypatch.setattr(*target, fail)
    with pytest.raises(Killed):
        run_experiment(Experiment(method="free", cycles=6, out=str(out), resume=True, checkpoint_every=1))
    monkeypatch.undo()
    assert out.read_bytes() == before
    assert assert_complete_cycles(out, 6) == 2


def test_damaged_bytes_in_a_run_file_are_refused_on_resume(tmp_path):
    """Checksums: a run file whose data bytes were damaged after writing is not resumed from."""
    from interfaces.errors import DataError
    from interfaces.harness import Experiment, run_experiment

    out = tmp_path / "run.nc"
    run_experiment(Experiment(method="free", members=3, cycles=30, out=str(out)))
    data = bytearray(out.read_bytes())
    start = len(data) // 3
    data[start:start + 400] = bytes(b ^ 0xFF for b in data[start:start + 400])  # inside the data
    out.write_bytes(bytes(data))
    with pytest.raises(DataError, match="run.nc"):
        run_experiment(Experiment(method="free", members=3, cycles=30, out=str(out), resume=True))
