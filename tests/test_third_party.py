"""Third-party plugins installed through the entry-point group, good and broken."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture(scope="module")
def installed_plugins(tmp_path_factory):
    """Install the example packages into a folder of their own and put it on the path of the
    commands these tests start: entry points are found there as in site-packages, and the
    shared environment (which other processes may be using) is never changed."""
    import os

    target = tmp_path_factory.mktemp("site")
    for folder in ("good_plugin", "broken_plugin"):
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(target), str(PLUGINS / folder)], check=True, capture_output=True)
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target), *([before] if before else [])])
    yield target
    if before is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = before


def test_third_party_method_runs_and_broken_plugin_is_skipped(installed_plugins, tmp_path):
    listing = run_cli("methods", check=0)
    assert "nudging" in listing.stdout and "example-nudging" in listing.stdout
    assert "plugin 'example-broken' skipped: failed to import: RuntimeError" in listing.stderr
    nudged = json.loads(run_cli("run", "--method", "nudging", "--cycles", "200", "--json", check=0).stdout)
    free = json.loads(run_cli("run", "--method", "free", "--cycles", "200", "--json", check=0).stdout)
    assert nudged["analysis_rmse"] < 0.5 * free["analysis_rmse"]
    for method in ("free", "climatology"):  # every other method still runs
        run_cli("run", "--method", method, "--cycles", "5", check=0)


def test_the_shared_environment_is_left_alone(installed_plugins):
    from importlib.metadata import distributions

    assert (installed_plugins / "example_nudging").exists() or any(installed_plugins.glob("*nudging*"))
    names = {d.metadata["Name"] for d in distributions(path=[p for p in sys.path if "site-packages" in p])}
    assert "da-harness-example-nudging" not in names


def test_registration_errors_are_isolated():
    from interfaces.hookspecs import hookimpl
    from interfaces.registry import build_registry

    class RaisesInHook:
        @hookimpl
        def da_harness_register(self, registry):
            from baselines.reference import FreeRun

            registry.add_assimilator(FreeRun, name="half-registered")
            raise ValueError("boom")

    class Duplicate:
        @hookimpl
        def da_harness_register(self, registry):
            from baselines.reference import FreeRun

            registry.add_assimilator(FreeRun)  # 'free' already exists

    class NotAnAssimilator:
        @hookimpl
        def da_harness_register(self, registry):
            registry.add_assimilator(dict)

    reg = build_registry(extra_plugins=[("raiser", RaisesInHook()), ("dup", Duplicate()), ("bad", NotAnAssimilator())])
    problems = dict(reg.problems)
    assert "half-registered" not in reg.assimilators  # rolled back
    assert "ValueError: boom" in problems["raiser"]
    assert "'free' rejected: already registered by plugin 'baselines'" in problems["dup"]
    assert "not a subclass" in problems["bad"]
    assert reg.assimilators["free"].plugin == "baselines"
