"""The catalogue of bad inputs (issue 5): each gives one clear error line and a non-zero exit
where the run cannot go on, or is flagged, skipped and counted; no failed run leaves an --out
file that looks complete."""

import json
import os
from importlib import metadata

import numpy as np
import pytest
import torch
import xarray as xr

from interfaces import registry as registry_mod
from interfaces.assimilator import Assimilator
from interfaces.errors import DataError, PluginError
from interfaces.harness import Experiment, run_experiment
from interfaces.hookspecs import hookimpl
from interfaces.observations import QC_MISSING
from interfaces.testing import check_assimilator

CYCLES = 6


def one_error_line(err: str, fragment: str) -> str:
    lines = [l for l in err.splitlines() if not l.startswith("da-harness: warning")]
    assert len(lines) == 1 and lines[0].startswith("da-harness: error:"), err
    assert fragment in lines[0], err
    assert "Traceback" not in err
    return lines[0]


def status(path) -> str | None:
    if not os.path.exists(path):
        return None
    with xr.open_dataset(path) as ds:
        return ds.attrs["status"]


# --- files in the run file's own format ---------------------------------------------------------

@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    """A complete run file, and a truth file made from it (plus the initial state)."""
    folder = tmp_path_factory.mktemp("files")
    res = run_experiment(Experiment(method="free", cycles=CYCLES, out=str(folder / "run.nc")))
    with xr.open_dataset(folder / "run.nc") as ds:
        ds = ds.load()
    ds["truth_initial"] = ("site", res.setup.truth[0].numpy(), {"units": "1"})
    ds.to_netcdf(folder / "truth.nc")
    return folder, res


def edited(run_file, tmp_path, edit, name="edited.nc"):
    """A copy of the run file with ``edit(ds)`` applied."""
    with xr.open_dataset(run_file[0] / "truth.nc", decode_times=False) as ds:
        ds = ds.load()
    ds = edit(ds) or ds
    ds.to_netcdf(tmp_path / name)
    return tmp_path / name


def set_values(name, fn):
    def edit(ds):
        ds[name] = ds[name].copy(data=fn(ds[name].values.copy()))
    return edit


@pytest.mark.parametrize("option,edit,fragment", [
    ("--truth", lambda ds: ds.drop_vars("truth"), "variable 'truth' is missing"),
    ("--truth", lambda ds: ds.isel(site=slice(0, 20)), "has 20 points along 'site', model lorenz96 has 40"),
    ("--truth", lambda ds: ds.isel(time=slice(0, 3)), "holds 3 times; --cycles 6 needs 6"),
    # Without time stamps a truth file is read by position: its first entry is the initial state.
    ("--truth", lambda ds: ds.drop_vars(["truth_initial", "time"]).isel(time=slice(0, 6)), "needs 7 (the first is the initial state"),
    ("--truth", set_values("truth", lambda v: np.where(v > 5, np.nan, v)), "variable 'truth' holds NaN"),
    ("--truth", lambda ds: ds["truth"].attrs.update(units="m"), "has units 'm', model expects '1'"),
    ("--truth", lambda ds: ds.assign_coords(time=ds.time * 2), "variable 'time' has spacing 0.1"),
    ("--truth", lambda ds: ds.assign_coords(site=ds.site + 1), "variable 'site' does not match"),
    ("--truth", lambda ds: ds.rename(site="x"), "has dims ('time', 'x'), expected ('time', 'site')"),
    ("--observations", lambda ds: ds.drop_vars("obs_value"), "variable 'obs_value' is missing"),
    ("--observations", lambda ds: ds.isel(time=slice(0, 2)), "holds 2 times; --cycles 6 needs 6"),
    ("--observations", set_values("obs_std", lambda v: v * 0), "variable 'obs_std' must be finite and > 0"),
    ("--observations", set_values("obs_std", lambda v: -v), "'obs_std' must be finite and > 0"),
    ("--observations", set_values("obs_std", lambda v: v * np.inf), "'obs_std' must be finite and > 0"),
    ("--observations", set_values("obs_std", lambda v: v * np.arange(1, 7)[:, None]), "'obs_std' varies in time"),
    ("--observations", set_values("obs_qc", lambda v: v + 7), "'obs_qc' holds codes outside 0..3"),
    ("--observations", lambda ds: ds.drop_vars("obs_index"), "variable 'obs_index' is missing"),
    ("--observations", lambda ds: ds["obs_index"].attrs.update(units="km"), "'obs_index' has units 'km'"),
    ("--observations", lambda ds: ds.assign_coords(obs_variable=("obs", ["y"] * 40)), "unknown variable 'y'"),
    # observations outside the grid, or between grid points of a model that does not interpolate
    ("--observations", lambda ds: ds.assign_coords(obs_index=ds.obs_index + 10), "observation 30 at [40.0], not a grid point"),
    ("--observations", lambda ds: ds.assign_coords(obs_index=ds.obs_index - 0.5), "not a grid point of model lorenz96"),
    ("--observations", lambda ds: ds.assign_coords(obs_index=ds.obs_index * np.nan), "NaN or infinite locations"),
])
def test_bad_data_files_are_one_line_data_errors(cli, run_file, tmp_path, option, edit, fragment):
    path = edited(run_file, tmp_path, edit)
    out = tmp_path / "out.nc"
    code, _, err = cli("run", "--method", "free", "--cycles", CYCLES, option, path, "--out", out, "--no-progress")
    line = one_error_line(err, fragment)
    assert code == 1 and str(path) in line and not out.exists()


@pytest.mark.parametrize("option,damage", [
    (o, d) for o in ("--truth", "--observations", "--resume") for d in ("missing", "corrupt", "truncated", "empty")
    if (o, d) != ("--resume", "missing")  # starts the run afresh: see the next test
])
def test_missing_corrupt_truncated_files(cli, run_file, tmp_path, option, damage):
    src = (run_file[0] / "run.nc").read_bytes()
    path = tmp_path / "damaged.nc"
    if damage == "corrupt":
        path.write_bytes(os.urandom(4096))
    elif damage == "truncated":
        path.write_bytes(src[: len(src) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    written = path.read_bytes() if path.exists() else None
    args = ["run", "--method", "free", "--cycles", CYCLES, "--no-progress"]
    if option == "--resume":
        args += ["--out", path, "--resume"]
    else:
        args += [option, path, "--out", tmp_path / "out.nc"]
    code, _, err = cli(*args)
    fragment = "does not exist" if damage == "missing" else "is corrupt or not netCDF"
    assert code == 1 and str(path) in one_error_line(err, fragment)
    assert not (tmp_path / "out.nc").exists()
    if written is not None:
        assert path.read_bytes() == written  # left as it was: never replaced by a partial run


def test_resume_of_a_missing_file_starts_afresh(run_file, tmp_path):
    # A run killed before its first write leaves no file; --resume must then simply start.
    out = tmp_path / "new.nc"
    res = run_experiment(Experiment(method="free", cycles=CYCLES, out=str(out), resume=True))
    with xr.open_dataset(out) as ds, xr.open_dataset(run_file[0] / "run.nc") as ref:
        assert ds.attrs["status"] == "complete" and np.array_equal(ds.analysis.values, ref.analysis.values)
    assert res.summary["cycles"] == CYCLES


@pytest.mark.parametrize("args,fragment", [
    (["--seed", "1"], "it was run with seed=0, not 1"),
    (["--method", "climatology"], "method='free', not 'climatology'"),
    (["--set", "size=20"], "model_options"),
    (["--members", "3"], "members=None, not 3"),
])
def test_resume_of_a_mismatched_run_file(cli, run_file, tmp_path, args, fragment):
    out = tmp_path / "r.nc"
    out.write_bytes((run_file[0] / "run.nc").read_bytes())
    argv = ["run", "--method", "free", "--cycles", CYCLES, "--out", out, "--resume", "--no-progress", *args]
    if "--method" in args:
        argv = argv[:1] + argv[3:]
    code, _, err = cli(*argv)
    assert code == 2 and "cannot resume" in one_error_line(err, fragment)
    assert out.read_bytes() == (run_file[0] / "run.nc").read_bytes()


def test_resume_of_a_file_not_written_by_a_run(cli, run_file, tmp_path):
    out = tmp_path / "r.nc"
    xr.Dataset({"x": ("t", np.zeros(3))}).to_netcdf(out)
    code, _, err = cli("run", "--method", "free", "--cycles", CYCLES, "--out", out, "--resume")
    assert code == 1 and "not written by da-harness run" in one_error_line(err, "settings")


def test_truth_and_observations_files_reproduce_the_run(run_file):
    """The run file's own format round-trips: its truth and observations give the same run."""
    folder, ref = run_file
    res = run_experiment(Experiment(method="free", cycles=CYCLES, truth_file=str(folder / "truth.nc"),
                                    observations_file=str(folder / "run.nc")))
    assert torch.equal(res.setup.truth, ref.setup.truth)
    assert torch.equal(res.setup.obs_values, ref.setup.obs_values)
    assert np.array_equal(res.recorder.analysis, ref.recorder.analysis)
    assert res.summary["analysis_rmse"] == ref.summary["analysis_rmse"]


def test_non_finite_observations_are_flagged_skipped_and_counted(cli, run_file, tmp_path):
    def poison(v):
        v[0, 3], v[1, 5], v[2, 7] = np.nan, np.inf, -np.inf
        return v
    path = edited(run_file, tmp_path, set_values("obs_value", poison))
    out = tmp_path / "out.nc"
    code, stdout, err = cli("run", "--method", "3dvar", "--cycles", CYCLES, "--burn-in", 0, "--observations", path,
                            "--out", out, "--json", "--no-progress")
    assert code == 0, err
    summary = json.loads(stdout.splitlines()[-1])
    assert summary["obs_flagged"] == 3 and summary["obs_used"] == CYCLES * 40 - 3
    assert np.isfinite(summary["analysis_rmse"])
    with xr.open_dataset(out) as ds:
        assert ds.obs_qc.values[0, 3] == ds.obs_qc.values[1, 5] == ds.obs_qc.values[2, 7] == QC_MISSING
        assert list(ds.obs_used.values[:3]) == [39, 39, 39] and np.isfinite(ds.analysis.values).all()


def test_an_empty_observation_set_runs_on_with_the_background(run_file, tmp_path):
    path = edited(run_file, tmp_path, set_values("obs_value", lambda v: v * np.nan))
    res = run_experiment(Experiment(method="3dvar", cycles=CYCLES, observations_file=str(path)))
    assert res.summary["obs_used"] == 0 and res.summary["obs_flagged"] == CYCLES * 40
    assert np.array_equal(res.recorder.analysis, res.recorder.background)
    assert "omb_rms" not in res.summary


# --- options and observation specs -------------------------------------------------------------

@pytest.mark.parametrize("args,fragment", [
    (["--set", "method.nope=1"], "unknown option 'nope' for method 'free'"),
    (["--set", "=3"], "empty key"),
    (["--method", "enkf", "--set", "inflation=lots"], "expects float"),
    (["--method", "enkf", "--set", "variant=magic"], "valid variants: etkf, stochastic"),
    (["--method", "enkf", "--members", "1"], "at least 2 members"),
    (["--obs", "random:1.5"], "fraction in (0, 1]"),
    (["--obs", "random:-0.2"], "fraction in (0, 1]"),
    (["--obs", "random:0"], "fraction in (0, 1]"),
    (["--obs", "every:x"], "positive integer step"),
    (["--obs", "every:0"], "positive integer step"),
    (["--obs", "indices:"], "grid-point indices"),
    (["--obs", "indices:-1,3"], "grid-point indices"),
    (["--obs", "bogus:3"], "unknown observation kind 'bogus'"),
    (["--obs", "log+all"], "unknown observation transform 'log'"),
    (["--obs", "all@q"], "unknown variable 'q'"),
    (["--obs-std", "0"], "finite and positive"),
    (["--obs-std", "-0.5"], "finite and positive"),
    (["--obs-std", "inf"], "finite and positive"),
    (["--obs-std", "x=abc"], "not a number"),
    (["--cycles", "-4"], "--cycles must be a positive integer"),
    (["--members", "0"], "--members must be a positive integer"),
    (["--burn-in", "9"], "--burn-in must be in [0, cycles)"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be >= 0"),
    (["--qc-background", "-2"], "qc_background must be >= 0"),
    (["--cycles", "two"], "invalid int value"),
    (["--resume"], "--resume needs --out"),
    (["--model", "lorenz63"], "valid models:"),
])
def test_bad_options_and_specs_exit_2(cli, tmp_path, args, fragment):
    argv = ["run", "--method", "free", "--cycles", "3", "--no-progress", *args]
    if "--method" in args:
        argv = argv[:1] + argv[3:]
    code, _, err = cli(*argv)
    assert code == 2
    one_error_line(err, fragment)


# --- plugins that break -----------------------------------------------------------------------

class Raises(Assimilator):
    name = "raises"
    description = "raises inside prepare or assimilate"
    defaults = {"where": "assimilate", "at": 3}
    preferred_members = 1

    def prepare(self, context):
        super().prepare(context)
        self.k = 0
        if self.options["where"] == "prepare":
            raise ValueError("prepare exploded")

    def assimilate(self, background, observations, operator):
        self.k += 1
        if self.k > self.options["at"]:
            raise RuntimeError("assimilate exploded")
        return background.clone()


class Returns(Assimilator):
    name = "returns"
    description = "returns a broken analysis"
    defaults = {"what": "shape"}
    preferred_members = 1

    def assimilate(self, background, observations, operator):
        what = self.options["what"]
        if what == "shape":
            return background[:, :-1].clone()
        if what == "nan":
            out = background.clone()
            out[0, 5] = float("nan")
            return out
        if what == "inf":
            return background * float("inf")
        if what == "numpy":
            return background.numpy()
        if what == "float32":
            return background.float()
        if what == "global-rng":
            return background + 0.1 * torch.randn(background.shape, dtype=background.dtype)
        if what == "in-place":
            background += 0.1
            return background.clone()
        if what == "counter":  # state that changes between cycles, not in state_dict
            self.calls = getattr(self, "calls", 0) + 1
            return background + self.calls
        if what == "network":  # uses the unfiltered network from prepare, not the operator given
            H = self.context.operator.matrix()
            innovation = observations.values - background @ H.T
            return background + 0.5 * innovation @ H
        raise AssertionError(what)


class BrokenPlugins:
    @hookimpl
    def da_harness_register(self, registry):
        registry.add_assimilator(Raises)
        registry.add_assimilator(Returns)


class RaisesInRegistration:
    @hookimpl
    def da_harness_register(self, registry):
        registry.add_assimilator(Raises, name="half-registered")
        raise KeyError("registration exploded")


@pytest.fixture(scope="module")
def import_failures(tmp_path_factory):
    """Entry points whose module raises at import, or does not exist."""
    folder = tmp_path_factory.mktemp("plugins")
    (folder / "da_catalogue_boom.py").write_text("raise ImportError('needs a library that is not installed')\n")
    group = "da_harness.plugins"
    return folder, [metadata.EntryPoint("catalogue-boom", "da_catalogue_boom", group),
                    metadata.EntryPoint("catalogue-ghost", "da_catalogue_no_such_module:plugin", group)]


@pytest.fixture
def broken_registry(monkeypatch, import_failures):
    folder, extra = import_failures
    monkeypatch.syspath_prepend(str(folder))
    real = registry_mod._entry_points
    monkeypatch.setattr(registry_mod, "_entry_points", lambda group: [*real(group), *extra])
    reg = registry_mod.build_registry(extra_plugins=[("catalogue-broken", BrokenPlugins()),
                                                     ("catalogue-registration", RaisesInRegistration())])
    monkeypatch.setattr("interfaces.cli.get_registry", lambda: reg)
    return reg


def test_plugins_failing_at_import_and_registration_are_named_and_skipped(cli, broken_registry):
    problems = dict(broken_registry.problems)
    assert problems["catalogue-boom"] == "failed to import: ImportError: needs a library that is not installed"
    assert "failed to import: ModuleNotFoundError" in problems["catalogue-ghost"]
    assert problems["catalogue-registration"] == "failed in da_harness_register: KeyError: 'registration exploded'"
    assert "half-registered" not in broken_registry.assimilators
    code, out, err = cli("methods")
    assert code == 0 and "raises" in out and "free" in out
    warnings = [l for l in err.splitlines() if l.startswith("da-harness: warning: plugin")]
    assert len(warnings) == 3 and all(len(w.splitlines()) == 1 for w in warnings) and "Traceback" not in err
    code, _, err = cli("run", "--method", "free", "--cycles", "3", "--no-progress")
    assert code == 0, err


def test_plugin_raising_in_prepare(cli, broken_registry, tmp_path):
    out = tmp_path / "r.nc"
    code, _, err = cli("run", "--method", "raises", "--set", "where=prepare", "--cycles", CYCLES, "--out", out, "--no-progress")
    one_error_line(err, "method 'raises' (plugin 'catalogue-broken') failed in prepare: ValueError: prepare exploded")
    assert code == 1 and not out.exists()
    with pytest.raises(PluginError):  # --debug lets the exception through, for its traceback
        cli("--debug", "run", "--method", "raises", "--set", "where=prepare", "--cycles", CYCLES)


def test_plugin_raising_in_assimilate_leaves_a_partial_file(cli, broken_registry, tmp_path):
    out = tmp_path / "r.nc"
    code, _, err = cli("run", "--method", "raises", "--cycles", CYCLES, "--out", out, "--checkpoint-every", 1, "--no-progress")
    one_error_line(err, "(plugin 'catalogue-broken') failed at cycle 3: RuntimeError: assimilate exploded")
    assert code == 1
    with xr.open_dataset(out) as ds:
        assert ds.attrs["status"] == "partial" and ds.attrs["completed_cycles"] == 3 and ds.sizes["time"] == 3


def test_a_failed_run_keeps_the_previous_complete_file(cli, broken_registry, run_file, tmp_path):
    out = tmp_path / "r.nc"
    out.write_bytes((run_file[0] / "run.nc").read_bytes())
    code, _, err = cli("run", "--method", "raises", "--cycles", CYCLES, "--out", out, "--no-progress", "--overwrite")
    assert code == 1 and "assimilate exploded" in one_error_line(err, "failed at cycle 3")
    assert out.read_bytes() == (run_file[0] / "run.nc").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]  # no temporary left


@pytest.mark.parametrize("what,fragment", [
    ("shape", "returned shape (1, 39), expected (1, 40)"),
    ("nan", "returned non-finite values"),
    ("inf", "returned non-finite values"),
    ("numpy", "returned ndarray, not a torch.Tensor"),
])
def test_plugin_returning_a_broken_analysis_is_named(cli, broken_registry, tmp_path, what, fragment):
    out = tmp_path / "r.nc"
    code, _, err = cli("run", "--method", "returns", "--set", f"what={what}", "--cycles", CYCLES, "--out", out, "--no-progress")
    assert code == 1 and not out.exists()
    one_error_line(err, f"method 'returns' (plugin 'catalogue-broken') {fragment}")


# --- the contract check catches what the harness cannot see at run time -------------------------

@pytest.mark.parametrize("what,check", [
    ("shape", "shape"), ("nan", "finite"), ("numpy", "shape"), ("float32", "dtype"),
    ("global-rng", "determinism"), ("in-place", "inputs untouched"), ("counter", "state_dict"),
    ("network", "QC-flagged observations unused"),
])
def test_check_assimilator_names_the_plugin_and_the_check(what, check):
    with pytest.raises(AssertionError, match=rf"method 'returns' failed '{check}'"):
        check_assimilator(Returns, options={"what": what})


def test_check_assimilator_reports_prepare_and_assimilate_failures():
    with pytest.raises(AssertionError, match="method 'raises' failed 'prepare': ValueError: prepare exploded"):
        check_assimilator(Raises, options={"where": "prepare"})
    with pytest.raises(AssertionError, match="method 'raises' failed .*RuntimeError: assimilate exploded"):
        check_assimilator(Raises, options={"at": 0})


@pytest.mark.parametrize("name,kw", [
    ("free", {}), ("climatology", {}), ("enkf", {}), ("enkf", {"options": {"variant": "stochastic"}}),
    ("3dvar", {"obs": "arctan+every:2"}), ("letkf", {"members": 8}),
])
def test_builtin_methods_pass_the_contract(name, kw):
    factory = registry_mod.get_registry().assimilator(name).factory
    report = check_assimilator(factory, **kw)
    assert report["method"] == name and "state_dict" in report["checks"] and "determinism" in report["checks"]


# --- losda checkpoints (written by losda_plugin/checkpoint.py) --------------------------------

@pytest.fixture
def losda_checkpoint():
    ckpt = pytest.importorskip("losda_plugin.checkpoint")
    config = pytest.importorskip("losda_plugin.config")
    if not all(hasattr(ckpt, n) for n in ("load", "REQUIRED")) or not hasattr(config, "config_hash"):
        pytest.skip("losda_plugin.checkpoint has no public load() yet")
    return ckpt, config


@pytest.mark.parametrize("damage,fragment", [
    ("missing", "does not exist"),
    ("corrupt", "is not a torch checkpoint"),  # random bytes, not a zip archive
    ("not-a-checkpoint", "is a torch file but not a losda checkpoint"),
    ("old-format", "this version reads"),
    ("other-config", "was trained for another configuration: preset is 'other'"),
])
def test_losda_checkpoints_missing_corrupt_or_mismatched(losda_checkpoint, tmp_path, damage, fragment):
    ckpt, config = losda_checkpoint
    expected = {"model": "lorenz96", "preset": "quick", "latent_channels": 2}
    path = tmp_path / "prior.pt"
    payload = {k: None for k in ckpt.REQUIRED}
    payload.update(format=config.FORMAT, config=expected, config_hash=config.config_hash(expected))
    if damage == "corrupt":
        path.write_bytes(os.urandom(1000))
    elif damage == "not-a-checkpoint":
        torch.save({"weights": torch.zeros(3)}, path)
    elif damage == "old-format":
        torch.save({**payload, "format": config.FORMAT + 1}, path)
    elif damage == "other-config":
        other = {**expected, "preset": "other"}
        torch.save({**payload, "config": other, "config_hash": config.config_hash(other)}, path)
    with pytest.raises(DataError, match=fragment) as info:
        ckpt.load(path, expected, geometry=None)
    assert str(path) in str(info.value) and len(str(info.value).splitlines()) == 1
