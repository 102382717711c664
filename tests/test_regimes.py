"""Imperfect-model twins (--truth-set, --model-error) and nonlinear observations on the sphere
(issue 14 items 6-7): the truth changes, the methods never learn how."""

import json
import math

import pytest
import torch

from interfaces import api, model_error, suites, sweep
from interfaces.assimilator import Assimilator
from interfaces.errors import UsageError
from interfaces.grouping import group_name
from interfaces.harness import Experiment, run_experiment, setup
from interfaces.models.sw import ShallowWater
from interfaces.registry import Entry, Registry, get_registry

# A cheap sphere: short spin-up, few climatology trajectories (mechanics, not climate).
SW_SMALL = {"spinup_days": 1.0, "init_days": 0.5, "clim_members": 40, "clim_spacing": 1}


def _truth(**fields):
    return setup(Experiment(model="lorenz96", method="free", cycles=20, seed=3, **fields)).truth


def test_truth_options_change_the_truth_and_defaults_do_not():
    perfect = _truth()
    assert not torch.equal(_truth(truth_options={"forcing": 9.0}), perfect)
    # The defaults given explicitly, or a zero forcing, are the perfect-model twin exactly.
    assert torch.equal(_truth(truth_options={"forcing": 8.0}), perfect)
    assert torch.equal(_truth(model_error="additive:0"), perfect)


def test_additive_model_error_is_reproducible_and_sized():
    perfect = _truth()
    noisy = _truth(model_error="additive:0.5")
    assert torch.equal(noisy, _truth(model_error="additive:0.5"))  # drawn from the seed's stream
    assert torch.equal(noisy[0], perfect[0])  # the same initial state: only the forcing differs
    # The first cycle's difference is the first draw alone (same state, same forecast).
    first = noisy[1] - perfect[1]
    assert 0.3 < float(first.std()) < 0.7
    assert not torch.equal(noisy, perfect)


def _seeded(seed, **fields):
    return setup(Experiment(model="lorenz96", method="free", cycles=5, seed=seed, **fields)).truth


def test_model_error_draws_differ_between_seeds():
    a = _seeded(1, model_error="additive:0.5") - _seeded(1)
    b = _seeded(2, model_error="additive:0.5") - _seeded(2)
    assert not torch.allclose(a[1], b[1])


class Snoop(Assimilator):
    """A method that looks for the truth model in everything the harness gives it."""

    name = "snoop"
    description = "test: records what its Context holds"
    found: list = []

    def prepare(self, context):
        super().prepare(context)
        text = json.dumps({"settings": context.settings, "model": context.model.options},
                          sort_keys=True, default=str)
        Snoop.found.append((text, dict(context.model.options), context.climatology))

    def assimilate(self, background, observations, operator):
        return background.clone()


def _registry_with(cls) -> Registry:
    base = get_registry()
    return Registry(assimilators={**base.assimilators, cls.name: Entry(cls.name, cls, "test", "test")},
                    models=base.models, observation_kinds=base.observation_kinds)


def test_methods_get_no_truth_model_information():
    Snoop.found.clear()
    reg = _registry_with(Snoop)
    run_experiment(Experiment(model="lorenz96", method="snoop", cycles=3, seed=1,
                              truth_options={"forcing": 9.75}, model_error="additive:0.125"), reg)
    run_experiment(Experiment(model="lorenz96", method="snoop", cycles=3, seed=1), reg)
    (imperfect, options, clim), (perfect, _, clim_perfect) = Snoop.found
    assert "9.75" not in imperfect and "0.125" not in imperfect
    assert "truth_options" not in imperfect and "model_error" not in imperfect
    assert options["forcing"] == 8.0  # the forecast model, and its climatology
    assert imperfect == perfect and torch.equal(clim, clim_perfect)


def test_run_file_records_truth_and_resume_refuses_a_change(tmp_path):
    out = tmp_path / "run.nc"
    ds = api.run(model="lorenz96", method="enkf", cycles=6, seed=2, members=10, out=out,
                 truth_options=["forcing=9"], model_error="additive:0.1")
    assert json.loads(ds.attrs["truth_model_options"])["forcing"] == 9.0
    assert json.loads(ds.attrs["model_options"])["forcing"] == 8.0
    assert ds.attrs["model_error"] == "additive:0.1"
    settings = json.loads(ds.attrs["settings"])
    assert settings["truth_options"] == {"forcing": 9.0} and settings["model_error"] == "additive:0.1"
    for changed in ({"truth_options": ["forcing=9.5"], "model_error": "additive:0.1"},
                    {"model_error": "additive:0.1"},
                    {"truth_options": ["forcing=9"], "model_error": "additive:0.2"}):
        with pytest.raises(UsageError, match="cannot resume"):
            api.run(model="lorenz96", method="enkf", cycles=6, seed=2, members=10, out=out, resume=True, **changed)
    # The same twin resumes (a complete file: nothing left to run).
    api.run(model="lorenz96", method="enkf", cycles=6, seed=2, members=10, out=out, resume=True,
            truth_options={"forcing": "9"}, model_error="additive:0.1")


def test_perfect_model_settings_and_job_hashes_are_unchanged():
    # Old run files (no truth keys) still resume, old sweep jobs keep their hash and table.
    settings = Experiment(model="lorenz96").settings()
    assert "truth_options" not in settings and "model_error" not in settings
    job = sweep.make_job(model="sw", method="free", obs="random:0.05", cycles=5, seed=0,
                         model_options={"resolution": "32x64"})
    imperfect = sweep.make_job(model="sw", method="free", obs="random:0.05", cycles=5, seed=0,
                               model_options={"resolution": "32x64"}, truth_options={"jet_speed": 70.0})
    assert sweep.job_hash(job) != sweep.job_hash(imperfect)
    assert group_name(job) == "sw-32x64-random0.05"
    assert group_name(imperfect) != group_name(job)


@pytest.mark.parametrize("options,match", [
    ({"truth_options": {"forcing": "x"}}, "expects float"),
    ({"truth_options": {"size": 41}}, "state shape"),
    ({"model_error": "spectral:h=1"}, "spectral model on the sphere"),
    ({"model_error": "additive:nan"}, "finite number"),
    ({"model_error": "additive:y=1"}, "unknown variable 'y'"),
    ({"model_error": "gauss:1"}, "valid kinds: none, additive, spectral"),
])
def test_bad_truth_settings_are_one_line_errors(options, match):
    with pytest.raises(UsageError, match=match):
        setup(Experiment(model="lorenz96", method="free", cycles=2, **options))


def test_truth_settings_cannot_be_combined_with_a_truth_file(tmp_path):
    out = tmp_path / "run.nc"
    api.run(model="lorenz96", method="free", cycles=3, out=out)
    with pytest.raises(UsageError, match="cannot be combined with --truth"):
        api.run(model="lorenz96", method="free", cycles=3, truth=out, truth_options={"forcing": 9.0})


def test_unknown_truth_option_names_the_valid_ones(cli):
    code, _, err = cli("run", "--model", "lorenz96", "--method", "free", "--cycles", "2", "--truth-set", "forc=9")
    assert code == 2 and err.count("\n") == 1
    assert "unknown option 'forc'" in err and "--truth-set" in err and "forcing" in err


@pytest.fixture(scope="module")
def sw_model(tmp_path_factory):
    m = ShallowWater(**SW_SMALL)
    m.cache_dir = tmp_path_factory.mktemp("sw-regimes")
    return m


def test_spectral_increment_size_and_spectrum(sw_model):
    error = model_error.parse("spectral:h=20,vort=1e-6,lmax=6", sw_model)
    gen = torch.Generator().manual_seed(0)
    inc = model_error.spectral_increment(sw_model, error.sizes, error.lmax, 3, gen)
    w = sw_model.area_weights()
    h_rms = (inc[:, 0].pow(2) * w).mean(dim=(1, 2)).sqrt()
    assert torch.allclose(h_rms, torch.full((3,), 20.0, dtype=torch.float64), rtol=1e-4)
    dyn = sw_model.dyn
    spec = dyn.to_spectral(inc)
    power = spec.abs().pow(2).sum(-1)  # per total wavenumber
    for channel in (0, 2):  # vorticity and height: only 1 <= l <= 6
        assert float(power[:, channel, 7:].sum()) < 1e-8 * float(power[:, channel].sum())
        assert float(power[:, channel, 0].sum()) < 1e-8 * float(power[:, channel].sum())
    vort = dyn.isht(spec[:, 0]).to(torch.float64)
    v_rms = (vort.pow(2) * w).mean(dim=(1, 2)).sqrt()
    assert torch.allclose(v_rms, torch.full((3,), 1e-6, dtype=torch.float64), rtol=1e-3)
    assert float(spec[:, 1].abs().max()) < 1e-6 * float(spec[:, 0].abs().max())  # no divergence asked for
    with pytest.raises(UsageError, match="lmax must be an integer in"):
        model_error.parse("spectral:h=1,lmax=40", sw_model)
    with pytest.raises(UsageError, match="unknown key 'q'"):
        model_error.parse("spectral:q=1", sw_model)


def test_sw_imperfect_twin_runs_and_records_its_truth(tmp_path):
    """Issue 14's physics setting (jet 70 m/s, drag 7 days) on sw 32x64: a few cycles, the truth
    from the truth model's own attractor (its own spin-up), recorded in the run file."""
    base = [f"model.{k}={v}" for k, v in SW_SMALL.items()]
    perfect = api.run(model="sw", method="free", obs="random:0.05", cycles=3, seed=5, options=base)
    ds = api.run(model="sw", method="free", obs="random:0.05", cycles=3, seed=5, options=base,
                 truth_options=["jet_speed=70", "drag_days=7"], model_error="spectral:h=10,vort=5e-7",
                 out=tmp_path / "sw.nc")
    truth_opts = json.loads(ds.attrs["truth_model_options"])
    assert truth_opts["jet_speed"] == 70.0 and truth_opts["drag_days"] == 7.0
    assert json.loads(ds.attrs["model_options"])["jet_speed"] == 80.0
    assert ds.attrs["model_error"] == "spectral:h=10,vort=5e-7"
    diff = float(abs(ds["truth_h"] - perfect["truth_h"]).max())
    assert math.isfinite(diff) and diff > 1.0


def test_sw_arctan_letkf_beats_the_free_run_and_records_the_transform():
    """Nonlinear observations on the sphere: the LETKF's ensemble-space H(X) handles arctan."""
    base = [f"model.{k}={v}" for k, v in SW_SMALL.items()]
    kw = dict(model="sw", obs="arctan+random:0.05", cycles=8, burn_in=4, seed=2, options=base)
    free = api.run(method="free", **kw)
    letkf = api.run(method="letkf", members=10, **kw)
    assert float(letkf["analysis_rmse"][4:].mean()) < 0.7 * float(free["analysis_rmse"][4:].mean())
    scale = letkf["obs_arctan_scale"].values
    h = letkf["obs_variable"].values == "h"
    # Each value's own climatological std: metres for h (~10^2), m/s for the winds (~10).
    assert (scale > 0).all() and scale[h].mean() > 5 * scale[~h].mean()
    assert abs(float(letkf["obs_std"].values.mean()) - 0.05) < 1e-12


def test_regimes_suite_builds_its_six_tables():
    from interfaces.cli import build_parser

    suite = suites.load_suite("regimes")
    args = build_parser().parse_args(["compare", "--suite", "regimes"])  # the CLI's own defaults
    protocol = {}
    jobs = suites.build_jobs(args, suite, get_registry(), protocol)
    assert len(protocol) == 6 and all(len(p["scored_seeds"]) >= 10 for p in protocol.values())
    assert all(j["cycles"] - j["burn_in"] >= 200 and j["burn_in"] >= 100 for j in jobs)
    imperfect = [j for j in jobs if j.get("truth_options")]
    assert imperfect and all(j["truth_options"] == {"jet_speed": 70.0, "drag_days": 7.0} for j in imperfect)
    assert {j.get("model_error") for j in jobs} == {None, "spectral:h=40,vort=1.5e-6"}
    # Every table runs the 20- and 6-member LETKF but the one with reanalysis data (20 only); the
    # LO-SDA ensemble (2.1x the one-member row's cost) runs in the perfect-model 5 % and
    # imperfect-physics tables only.
    from interfaces.grouping import group_name

    def sizes(method):
        out = {}
        for j in jobs:
            if j["method"] == method:
                out.setdefault(group_name(j), set()).add(j["members"])
        return out

    letkf = sizes("letkf")
    corrected = "sw-32x64-random0.05-truthdragdays7.0jetspeed70.0-fbiasdragdays7.0jetspeed70.0"
    assert letkf.pop(corrected) == {20} and all(s == {6, 20} for s in letkf.values()) and len(letkf) == 5
    ensembles = {t for t, s in sizes("losda").items() if 20 in s}
    assert ensembles == {"sw-32x64-random0.05", "sw-32x64-random0.05-truthdragdays7.0jetspeed70.0"}
    # Table 6 gives every method the reanalysis data as a forecast-bias correction; table 4 gives
    # it to LO-SDA alone, as a reanalysis-style prior (pairs of truth-model states and forecasts).
    assert {j.get("forecast_bias") for j in jobs if group_name(j) == corrected} == {"drag_days=7.0;jet_speed=70.0"}
    assert not any(j.get("forecast_bias") for j in jobs if group_name(j) != corrected)
    assert any(j["method_options"].get("train_backgrounds") == "forecast" for j in jobs
               if group_name(j) == "sw-32x64-random0.05-truthdragdays7.0jetspeed70.0")


def test_an_imperfect_model_table_says_so_in_its_title():
    from interfaces.report import table_title

    base = {"model": "sw", "model_options": {"resolution": "32x64"}, "obs": "random:0.05", "cycles": 300, "burn_in": 100}
    perfect = table_title(base)
    physics = table_title({**base, "truth_options": {"jet_speed": 70.0, "drag_days": 7.0}})
    forcing = table_title({**base, "model_error": "spectral:h=40,vort=1.5e-6"})
    assert "truth" not in perfect and "model error" not in perfect
    assert "truth model drag_days=7.0, jet_speed=70.0" in physics
    assert "model error spectral:h=40,vort=1.5e-6" in forcing
    assert len({perfect, physics, forcing}) == 3


def test_a_whole_table_name_selects_that_table_alone_though_it_prefixes_others():
    """The perfect-model table's name prefixes the two imperfect ones': compare --tables NAME$
    and rerun_full --table NAME must not score (untuned) the imperfect tables with it."""
    from interfaces.cli import build_parser

    from conftest import load_benchmark

    suite = suites.load_suite("regimes")

    def names(selector):
        args = build_parser().parse_args(["compare", "--suite", "regimes", "--methods", "free", "--tables", selector])
        return {group_name(j) for j in suites.build_jobs(args, suite, get_registry())}

    prefixed = names("sw-32x64-random0.05")
    assert len(prefixed) == 4  # a prefix keeps every table it starts
    assert names("sw-32x64-random0.05$") == {"sw-32x64-random0.05"}
    rerun_full = load_benchmark("rerun_full")
    assert [t[0] for t in rerun_full.tables("regimes", "sw-32x64-random0.05", None)] == ["sw-32x64-random0.05"]
    assert [t[0] for t in rerun_full.tables("regimes", "sw-32x64-random0.05$", None)] == ["sw-32x64-random0.05"]
    truth = [t[0] for t in rerun_full.tables("regimes", "sw-32x64-random0.05-truth", None)]
    assert len(truth) == 2 and all(t.startswith("sw-32x64-random0.05-truth") for t in truth)
    whole = "sw-32x64-random0.05-truthdragdays7.0jetspeed70.0"
    assert [t[0] for t in rerun_full.tables("regimes", whole, None)] == [whole]
    assert len(list(rerun_full.tables("regimes", None, None))) == 6
    command = rerun_full.compare_command("da-harness", build_parser().parse_args(["compare"]), "sw", "out",
                                         ["sw-32x64-random0.05"], None)
    assert command[command.index("--tables") + 1] == "sw-32x64-random0.05$" and "--device" not in command
    on_gpu = rerun_full.compare_command("da-harness", build_parser().parse_args(["compare", "--device", "cuda"]), "sw",
                                        "out", ["sw-32x64-random0.05"], None)
    assert on_gpu[-2:] == ["--device", "cuda"]
