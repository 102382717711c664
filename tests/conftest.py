import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_benchmark(name: str):
    """The script benchmarks/<name>.py as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets the same session-wide cache, never the user's."""
    cache = tmp_path_factory.getbasetemp() / "da-cache"
    monkeypatch.setenv("DA_HARNESS_CACHE", str(cache))
    yield


def run_cli(*args, cache=None, check=None, timeout=600):
    """Run `da-harness` in a subprocess; returns CompletedProcess."""
    env = dict(os.environ)
    if cache is not None:
        env["DA_HARNESS_CACHE"] = str(cache)
    proc = subprocess.run([sys.executable, "-m", "interfaces.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, proc.stderr
    return proc


@pytest.fixture
def cli(capsys):
    """Run `da-harness` in this process: returns (exit code, stdout, stderr)."""
    from interfaces.cli import main

    def call(*args):
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One torch thread, as the CLI's default: small LAPACK calls and sphere transforms are far
    slower multi-threaded on a shared machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
