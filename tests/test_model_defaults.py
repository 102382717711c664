"""Per-model method defaults (issue 12): measured values with their source, read by `run`,
`compare` and the suites alike; and `compare --obs` lists whose specs contain commas."""

import json

import pytest
import xarray as xr

from interfaces import suites, sweep
from interfaces.assimilator import Assimilator
from interfaces.cli import build_parser
from interfaces.errors import PluginError, UsageError
from interfaces.harness import Experiment, run_experiment
from interfaces.hookspecs import hookimpl
from interfaces.registry import build_registry, get_registry, instantiate_method, model_defaults


class Weighted(Assimilator):
    """Moves the background a fraction ``weight`` toward zero: its option has a per-model default."""

    name = "weighted"
    defaults = {"weight": 0.0, "label": "x"}
    model_defaults = {"lorenz96": {"weight": 0.5}}
    model_defaults_source = {"lorenz96": "tests/test_model_defaults.py"}

    def assimilate(self, background, observations, operator):
        return background * (1.0 - self.options["weight"])


def _registry(cls=Weighted):
    class Plugin:
        @hookimpl
        def da_harness_register(self, registry):
            registry.add_assimilator(cls)

    return build_registry(extra_plugins=[("weighted-plugin", Plugin())])


def test_sphere_defaults_are_the_tuned_values_and_set_still_wins():
    reg = get_registry()
    assert instantiate_method(reg, "dps", {}, model="sw").options["zeta"] == 3.0
    assert instantiate_method(reg, "dps", {}, model="lorenz96").options["zeta"] == 0.2
    assert instantiate_method(reg, "dps", {"zeta": "1.5"}, model="sw").options["zeta"] == 1.5
    assert instantiate_method(reg, "l3dvar", {}, model="sw").options["b_scale"] == 3.0
    assert instantiate_method(reg, "l3dvar", {}, model="lorenz96").options["b_scale"] == 1.0
    # On the sphere 3D-Var's default is the balanced B at its tuned scale; each B source asked for
    # gets the scale tuned for it there, and one never tuned there keeps its own default.
    sw = instantiate_method(reg, "3dvar", {}, model="sw").options
    assert (sw["b_source"], sw["scale"]) == ("balanced", 0.5)
    assert instantiate_method(reg, "3dvar", {"b_source": "nmc"}, model="sw").options["scale"] == 128.0
    assert instantiate_method(reg, "3dvar", {}, model="lorenz96").options["scale"] == 0.0  # the source's default
    assert instantiate_method(reg, "3dvar", {"b_source": "climatology"}, model="sw").options["scale"] == 0.0
    assert instantiate_method(reg, "3dvar", {"b_source": "nmc", "scale": "7"}, model="sw").options["scale"] == 7.0
    for method in ("dps", "l3dvar"):
        source = reg.assimilator(method).factory.model_defaults_source["sw"]
        assert "benchmarks/results/tuning.md" in source and "seed 10" in source
    assert "benchmarks/results/balanced_b.md" in reg.assimilator("3dvar").factory.model_defaults_source["sw"]


def test_the_run_file_records_the_effective_options(tmp_path):
    reg = _registry()
    out = tmp_path / "run.nc"
    result = run_experiment(Experiment(model="lorenz96", method="weighted", obs="every:4", cycles=3, burn_in=0,
                                       out=str(out), cache_dir=str(tmp_path)), reg)
    with xr.open_dataset(out) as ds:
        assert json.loads(ds.attrs["method_options"]) == {"weight": 0.5, "label": "x"}
    assert result.summary["analysis_rmse"] > 0
    # --set over the model default; another model keeps the class default.
    exp = Experiment(model="lorenz96", method="weighted", obs="every:4", cycles=3, burn_in=0,
                     method_options={"weight": "0.25"}, out=str(tmp_path / "set.nc"), cache_dir=str(tmp_path))
    run_experiment(exp, reg)
    with xr.open_dataset(tmp_path / "set.nc") as ds:
        assert json.loads(ds.attrs["method_options"])["weight"] == 0.25
    assert instantiate_method(reg, "weighted", {}, model="linear").options["weight"] == 0.0


def _jobs(argv, suite=None, registry=None):
    args = build_parser().parse_args(["compare", *argv])
    return suites.build_jobs(args, suite, registry or get_registry())


def test_compare_jobs_carry_model_defaults_under_suite_options_and_set():
    jobs = _jobs(["--model", "sw", "--methods", "dps,3dvar,free", "--cycles", "4"])
    assert {j["method"]: j["method_options"] for j in jobs} == {"dps": {"zeta": 3.0}, "3dvar": {"b_source": "balanced", "scale": 0.5}, "free": {}}
    suite = {"name": "t", "experiments": [{"model": "sw", "methods": ["dps"], "obs": ["random:0.05"], "cycles": 4,
                                           "method_options": {"dps": {"zeta": 1.0, "steps": 5}}}]}
    (job,) = _jobs([], suite)
    assert job["method_options"] == {"zeta": 1.0, "steps": 5}  # the suite block over the model default
    (job,) = _jobs(["--set", "dps.zeta=7"], suite)
    assert job["method_options"] == {"zeta": 7.0, "steps": 5}  # --set over the suite block


def test_a_change_to_the_model_default_table_changes_the_job_hash(monkeypatch):
    from losda_plugin.methods import DPS

    before = sweep.job_hash(_jobs(["--model", "sw", "--methods", "dps"])[0])
    monkeypatch.setattr(DPS, "model_defaults", {**DPS.model_defaults, "sw": {"zeta": 2.0}})
    after = _jobs(["--model", "sw", "--methods", "dps"])[0]
    assert after["method_options"] == {"zeta": 2.0} and sweep.job_hash(after) != before


def test_the_suites_give_the_tuned_options_through_the_table_alone():
    for name in ("full", "quick"):
        suite = suites.load_suite(name)
        assert all(o.get(m) is None or set(o[m]) <= {"preset"}
                   for b in suite["experiments"] for o in [b.get("method_options", {})] for m in o), name
        jobs = _jobs([], suite)
        sw = {j["method"]: j["method_options"] for j in jobs if j["model"] == "sw"}
        assert sw["dps"]["zeta"] == 3.0 and sw["l3dvar"]["b_scale"] == 3.0 and sw["3dvar"]["scale"] == 0.5


@pytest.mark.parametrize("table,message", [
    ({"lorenz96": {"nope": 1.0}}, "unknown option 'nope' on model 'lorenz96'"),
    ({"lorenz96": {"weight": "big"}}, "str default for option 'weight'"),
])
def test_a_broken_table_is_the_plugins_error(table, message):
    broken = type("Broken", (Weighted,), {"model_defaults": table})
    reg = _registry(broken)
    with pytest.raises(PluginError, match=message):
        instantiate_method(reg, "weighted", {}, model="lorenz96")
    unsourced = type("Unsourced", (Weighted,), {"model_defaults_source": {}})
    with pytest.raises(PluginError, match="without a model_defaults_source"):
        model_defaults(_registry(unsourced), "weighted", "lorenz96")


def test_methods_lists_the_per_model_defaults_with_their_source(cli):
    code, out, _ = cli("methods", "--json")
    dps = next(m for m in json.loads(out) if m["name"] == "dps")
    assert code == 0 and dps["model_defaults"]["sw"]["options"] == {"zeta": 3.0}
    assert "tuning.md" in dps["model_defaults"]["sw"]["source"]
    code, out, _ = cli("methods")
    assert "on sw: zeta=3.0" in out


# --- compare --obs ---------------------------------------------------------------------------
@pytest.mark.parametrize("argv,specs", [
    (["--obs", "indices:1,2,3"], ["indices:1,2,3"]),  # was split into indices:1, 2, 3
    (["--obs", "random:0.05,random:0.01"], ["random:0.05", "random:0.01"]),
    (["--obs", "indices:1,2;every:4"], ["indices:1,2", "every:4"]),
    (["--obs", "indices:1,2", "--obs", "arctan+every:4"], ["indices:1,2", "arctan+every:4"]),
    (["--obs", "every:4,arctan+indices:0,5"], ["every:4", "arctan+indices:0,5"]),
    ([], ["all"]),
])
def test_compare_obs_lists_keep_specs_with_commas_whole(argv, specs):
    jobs = _jobs(["--methods", "free", *argv])
    assert [j["obs"] for j in jobs] == specs


def test_compare_obs_with_a_variable_list_and_an_empty_spec():
    reg = get_registry()
    assert suites.parse_obs("random:0.05@h,u,every:2@v", reg) == ["random:0.05@h,u", "every:2@v"]
    with pytest.raises(UsageError, match="empty observation spec"):
        suites.parse_obs("every:2;;all", reg)


def test_default_burn_in_leaves_the_spheres_spin_up_out():
    from interfaces.models.lorenz96 import Lorenz96
    from interfaces.models.sw import ShallowWater

    assert Lorenz96.default_burn_in(100) == 10
    assert [ShallowWater.default_burn_in(n) for n in (12, 40, 300, 1000)] == [6, 20, 100, 100]
    exp = Experiment(model="lorenz96", method="free", cycles=30)
    run_experiment(exp)
    assert exp.burn_in == 3
