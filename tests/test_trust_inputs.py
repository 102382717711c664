"""Issue 12, "no silent wrong answers": inputs the harness used to misread or accept, each a
regression test that failed before the fix."""

import json

import numpy as np
import pytest
import torch
import xarray as xr

from interfaces import harness, io
from interfaces import registry as registry_mod
from interfaces.assimilator import Assimilator
from interfaces.harness import Experiment, run_experiment
from interfaces.hookspecs import hookimpl

CYCLES = 12


def one_error_line(err: str, fragment: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("da-harness: error:"), err
    assert fragment in lines[0], err
    return lines[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A complete 3D-Var run file on Lorenz-96 and its result."""
    folder = tmp_path_factory.mktemp("inputs")
    res = run_experiment(Experiment(method="3dvar", cycles=CYCLES, out=str(folder / "run.nc")))
    return folder, res


def rewrite(reference, tmp_path, edit, name):
    with xr.open_dataset(reference[0] / "run.nc", decode_times=False) as ds:
        ds = ds.load()
    ds = edit(ds)
    ds.to_netcdf(tmp_path / name)
    return str(tmp_path / name)


# --- 1. truth and observations in step ------------------------------------------------------------

def test_a_run_file_as_truth_and_observations_pairs_each_cycle_with_its_own_truth(reference):
    """Both files' times start at the first analysis time: observation k observes truth k. Before
    the fix the truth file's first time was taken as the initial state, pairing the observations
    of cycle k with the truth of cycle k + 1 (3D-Var RMSE 1.12 instead of 0.48 on 49 cycles)."""
    folder, ref = reference
    n = CYCLES - 2
    res = run_experiment(Experiment(method="3dvar", cycles=n, truth_file=str(folder / "run.nc"),
                                    observations_file=str(folder / "run.nc")))
    assert torch.equal(res.setup.truth[1:], ref.setup.truth[1 : n + 1])
    assert torch.equal(res.setup.obs_values, ref.setup.obs_values[:n])
    assert np.array_equal(res.recorder.analysis, ref.recorder.analysis[:n])
    assert torch.isnan(res.setup.truth[0]).all()  # no initial state in a run file; nothing uses it


def test_a_run_file_alone_as_truth_keeps_its_times(reference):
    """Generated observations of a run file's truth: the run file's times are analysis times."""
    folder, ref = reference
    res = run_experiment(Experiment(method="3dvar", cycles=CYCLES, truth_file=str(folder / "run.nc")))
    assert torch.equal(res.setup.truth[1:], ref.setup.truth[1:])
    assert res.summary["analysis_rmse"] == ref.summary["analysis_rmse"]


def test_files_starting_at_the_initial_time_are_aligned(reference, tmp_path):
    """A truth file from time 0 (the initial state) and an observations file also from time 0
    (nothing assimilates time 0): the observations of time L pair with the truth of time L."""
    folder, ref = reference
    L = ref.setup.model.cycle_length

    def from_zero(ds):
        initial = ds.isel(time=[0]).assign_coords(time=[0.0], cycle=("time", [-1]))
        initial["truth"][:] = ref.setup.truth[0].numpy()[None]
        out = xr.concat([initial, ds], dim="time", data_vars="minimal", coords="minimal", compat="override")
        return out.assign_coords(time=np.arange(CYCLES + 1) * L)

    both = rewrite(reference, tmp_path, from_zero, "from_zero.nc")
    res = run_experiment(Experiment(method="3dvar", cycles=CYCLES, truth_file=both, observations_file=both))
    assert torch.equal(res.setup.truth, ref.setup.truth)
    assert torch.equal(res.setup.obs_values, ref.setup.obs_values)
    assert res.summary["analysis_rmse"] == ref.summary["analysis_rmse"]


def test_observations_later_than_the_truth_are_paired_by_time(reference, tmp_path):
    """Observations starting two cycles into the truth file: truth index 2 is their initial state."""
    folder, ref = reference
    L = ref.setup.model.cycle_length
    n = CYCLES - 3
    later = rewrite(reference, tmp_path, lambda ds: ds.isel(time=slice(2, None)), "later.nc")
    res = run_experiment(Experiment(method="3dvar", cycles=n, truth_file=str(folder / "run.nc"),
                                    observations_file=later))
    # Observation times 3L.. ; their initial time 2L is the run file's second entry (index 1).
    assert torch.equal(res.setup.truth, ref.setup.truth[2 : n + 3])
    assert torch.equal(res.setup.obs_values, ref.setup.obs_values[2 : n + 2])
    assert float(xr.open_dataset(later, decode_times=False).time[0]) == pytest.approx(3 * L)


def test_truth_that_does_not_cover_the_observations_is_refused(reference, tmp_path, cli):
    folder, _ = reference
    late_truth = rewrite(reference, tmp_path, lambda ds: ds.isel(time=slice(4, None)), "late.nc")
    code, _, err = cli("run", "--method", "3dvar", "--cycles", 4, "--truth", late_truth,
                       "--observations", folder / "run.nc", "--no-progress")
    line = one_error_line(err, "holds neither the first analysis time 0.05")
    assert code == 1 and "late.nc" in line


def test_truth_initial_with_times_out_of_step_is_refused(reference, tmp_path, cli):
    folder, ref = reference
    def shifted(ds):
        ds["truth_initial"] = ("site", ref.setup.truth[0].numpy(), {"units": "1"})
        return ds.isel(time=slice(1, None))
    truth = rewrite(reference, tmp_path, shifted, "shifted.nc")
    code, _, err = cli("run", "--method", "3dvar", "--cycles", 4, "--truth", truth,
                       "--observations", folder / "run.nc", "--no-progress")
    assert code == 1
    one_error_line(err, "with 'truth_initial' it must start at the first analysis time 0.05")


# --- 7. nothing in a method's Context reproduces the truth -----------------------------------------

class TruthPeeker(Assimilator):
    """A plugin that tries to regenerate the experiment's truth from what its Context holds (the
    seed in ``settings``, as before the fix, or the truth file) and returns it as its analysis."""

    name = "truth-peeker"
    description = "cheats if it can"

    def prepare(self, context):
        super().prepare(context)
        self.stolen = None
        settings = context.settings
        if settings.get("truth_file"):
            self.stolen = io.load_truth(settings["truth_file"], context.model, settings["cycles"])
        elif "seed" in settings:
            gen = harness._stream(settings["seed"], "truth")
            self.stolen = context.model.truth_run(settings["cycles"], gen).to(torch.float64)
        self.k = 0

    def assimilate(self, background, observations, operator):
        self.k += 1
        if self.stolen is None:
            return background.clone()
        return self.stolen[self.k].expand_as(background).clone()


class PeekerPlugin:
    @hookimpl
    def da_harness_register(self, registry):
        registry.add_assimilator(TruthPeeker)


@pytest.fixture(scope="module")
def peeker_registry():
    return registry_mod.build_registry(extra_plugins=[("truth-peeker", PeekerPlugin())])


@pytest.mark.parametrize("source", ["seed", "truth_file"])
def test_a_plugin_cannot_regenerate_the_truth_from_its_context(peeker_registry, reference, source):
    folder, _ = reference
    exp = Experiment(method="truth-peeker", cycles=CYCLES, seed=3,
                     truth_file=str(folder / "run.nc") if source == "truth_file" else None)
    s = harness.setup(exp, peeker_registry)
    assert not {"seed", "truth_file", "observations_file"} & set(s.context.settings)
    res = run_experiment(Experiment(method="truth-peeker", cycles=CYCLES, seed=3, truth_file=exp.truth_file),
                         peeker_registry)
    assert res.setup.method.stolen is None
    assert res.summary["analysis_rmse"] > 0.5  # the free run's error, not the truth's zero


def test_the_method_seed_differs_between_seeds_and_is_not_the_seed(peeker_registry):
    seeds = [harness.setup(Experiment(method="truth-peeker", cycles=2, seed=k), peeker_registry).context.method_seed
             for k in (0, 1, 0)]
    assert seeds[0] == seeds[2] and seeds[0] != seeds[1]
    assert seeds[0] not in (0, 1) and seeds[1] not in (0, 1)


# --- 2. a model that blows up is blamed on the model ----------------------------------------------

def test_an_unstable_model_is_named_not_the_method(cli, tmp_path):
    code, _, err = cli("run", "--method", "free", "--set", "model.forcing=1e6", "--cycles", 3,
                       "--no-progress", "--cache-dir", tmp_path)
    line = one_error_line(err, "model 'lorenz96'")
    assert code == 2 and "non-finite" in line and '"forcing": 1000000.0' in line and "method" not in line


def test_an_absurd_observation_is_reported_without_a_numpy_warning(reference, tmp_path, cli):
    def huge(ds):
        ds["obs_value"][3, 5] = 1e30
        return ds
    path = rewrite(reference, tmp_path, huge, "huge.nc")
    code, _, err = cli("run", "--method", "3dvar", "--cycles", 8, "--observations", path, "--no-progress")
    line = one_error_line(err, "model 'lorenz96' forecast non-finite values at cycle 4")
    assert code == 1 and "observations of cycle 3 reach 1e+30" in line and "--qc-background" in line


# --- 3. nonsense refused -----------------------------------------------------------------------

@pytest.mark.parametrize("method,option,fragment", [
    ("enkf", "inflation=-3", "option 'inflation' of method 'enkf' must be > 0"),
    ("enkf", "rtps=1.5", "option 'rtps' of method 'enkf' must be in [0, 1]"),
    ("letkf", "radius=-5", "option 'radius' of method 'letkf' must be >= 0"),
    ("letkf", "rtps=-0.1", "option 'rtps' of method 'letkf' must be in [0, 1]"),
    ("letkf", "inflation=nan", "option 'inflation' of method 'letkf' must be > 0"),
    ("3dvar", "scale=-2", "option 'scale' of method '3dvar' must be >= 0"),
    ("3dvar", "max_iter=0", "option 'max_iter' of method '3dvar' must be >= 1"),
])
def test_out_of_range_method_options_are_refused(cli, method, option, fragment):
    code, _, err = cli("run", "--method", method, "--set", option, "--cycles", 2, "--no-progress")
    assert code == 2
    one_error_line(err, fragment)


@pytest.mark.parametrize("args,fragment", [
    (["--method", "3dvar", "--method", "enkf"], "--method given twice ('3dvar' and 'enkf')"),
    (["--method", "3dvar,enkf"], "`da-harness compare --methods 3dvar,enkf`"),
    (["--method", "3dvar", "--obs-std", "1e300"], "--obs-std '1e300' is out of range"),
    (["--method", "3dvar", "--obs-std", "1e-200"], "--obs-std '1e-200' is out of range"),
])
def test_nonsense_on_the_command_line_is_refused(cli, args, fragment):
    code, _, err = cli("run", *args, "--cycles", 2, "--no-progress")
    assert code == 2
    one_error_line(err, fragment)


def test_an_absurd_std_in_an_observations_file_is_refused(reference, tmp_path, cli):
    def absurd(ds):
        ds["obs_std"][:] = 1e300
        return ds
    path = rewrite(reference, tmp_path, absurd, "absurd.nc")
    code, _, err = cli("run", "--method", "3dvar", "--cycles", 4, "--observations", path, "--no-progress")
    assert code == 1
    one_error_line(err, "variable 'obs_std' is out of range")


def test_an_observations_file_without_a_finite_value_warns_once(reference, tmp_path, cli):
    """Running on is meaningful (it is a free run, and says so), so a warning, not an error."""
    def empty(ds):
        ds["obs_value"][:] = np.nan
        return ds
    path = rewrite(reference, tmp_path, empty, "empty.nc")
    code, out, err = cli("run", "--method", "3dvar", "--cycles", 4, "--observations", path, "--no-progress", "--json")
    assert code == 0 and json.loads(out)["obs_used"] == 0
    warnings = [l for l in err.splitlines() if l.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("da-harness: warning:") and "no finite value" in warnings[0]


# --- 4./5. the output file, checked before the first cycle --------------------------------------------

def test_out_naming_a_directory_is_refused_before_any_work(cli, tmp_path, monkeypatch):
    import interfaces.harness as h

    monkeypatch.setattr(h, "setup", lambda *a, **k: pytest.fail("setup ran before --out was checked"))
    code, _, err = cli("run", "--method", "free", "--cycles", 3, "--out", tmp_path, "--no-progress")
    assert code == 2
    one_error_line(err, "is a directory")
    (tmp_path / "file").write_text("x")
    code, _, err = cli("run", "--method", "free", "--cycles", 3, "--out", tmp_path / "file" / "run.nc", "--no-progress")
    assert code == 2
    one_error_line(err, "cannot create its folder")


def test_an_existing_run_file_is_kept_unless_overwrite(cli, tmp_path):
    out = tmp_path / "run.nc"
    assert cli("run", "--method", "free", "--cycles", 3, "--out", out, "--no-progress")[0] == 0
    before = out.read_bytes()
    code, _, err = cli("run", "--method", "free", "--cycles", 3, "--seed", 1, "--out", out, "--no-progress")
    assert code == 2 and out.read_bytes() == before
    one_error_line(err, f"--out '{out}' already holds a complete run; give --overwrite")
    code, _, err = cli("run", "--method", "free", "--cycles", 3, "--seed", 1, "--out", out, "--no-progress", "--overwrite")
    assert code == 0, err
    with xr.open_dataset(out) as ds:
        assert ds.attrs["seed"] == 1


def test_a_partial_run_file_is_kept_unless_resume_or_overwrite(cli, tmp_path):
    out = tmp_path / "run.nc"
    assert cli("run", "--method", "free", "--cycles", 4, "--out", tmp_path / "full.nc", "--no-progress")[0] == 0
    with xr.open_dataset(tmp_path / "full.nc") as ds:
        ds.load().assign_attrs(status="partial", completed_cycles=2).to_netcdf(out)
    code, _, err = cli("run", "--method", "free", "--cycles", 4, "--out", out, "--no-progress")
    assert code == 2
    one_error_line(err, "holds a partial run (2 of 4 cycles); give --resume to continue it or --overwrite")
    code, _, err = cli("run", "--method", "free", "--cycles", 4, "--out", out, "--no-progress", "--resume", "--overwrite")
    assert code == 2
    one_error_line(err, "--resume and --overwrite contradict each other")


# --- 6. --threads anywhere, --version, a bad $DA_HARNESS_THREADS -------------------------------------

def test_threads_after_the_subcommand_and_version(cli, monkeypatch):
    import interfaces

    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    code, out, _ = cli("models", "--threads", 2)
    assert code == 0 and seen == [2] and "lorenz96" in out
    code, out, _ = cli("--threads", 3, "methods")
    assert code == 0 and seen == [2, 3]
    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"da-harness {interfaces.__version__}"


def test_a_bad_threads_variable_is_one_line(cli, monkeypatch):
    monkeypatch.setenv("DA_HARNESS_THREADS", "abc")
    code, _, err = cli("methods")
    assert code == 2
    one_error_line(err, "DA_HARNESS_THREADS='abc' is not a positive integer")
