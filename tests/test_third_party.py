"""Third-party plugins installed through the entry-point group, good and broken."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture(scope="module")
def installed_plugins():
    """Install the example packages into this environment, and remove them afterwards."""
    names = ["da-harness-example-nudging", "da-harness-example-broken"]
    for folder in ("good_plugin", "broken_plugin"):
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--no-index", str(PLUGINS / folder)], check=True, capture_output=True)
    yield
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", *names], check=True, capture_output=True)


def test_third_party_method_runs_and_broken_plugin_is_skipped(installed_plugins, tmp_path):
    listing = run_cli("methods", check=0)
    assert "nudging" in listing.stdout and "example-nudging" in listing.stdout
    assert "plugin 'example-broken' skipped: failed to import: RuntimeError" in listing.stderr
    nudged = json.loads(run_cli("run", "--method", "nudging", "--cycles", "200", "--json", check=0).stdout)
    free = json.loads(run_cli("run", "--method", "free", "--cycles", "200", "--json", check=0).stdout)
    assert nudged["analysis_rmse"] < 0.5 * free["analysis_rmse"]
    for method in ("free", "climatology"):  # every other method still runs
        run_cli("run", "--method", method, "--cycles", "5", check=0)


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
