"""--forecast-bias (interfaces/forecast_bias.py): a mean forecast-bias correction estimated from
a named model's climatology, the classical methods' analogue of a prior trained on reanalysis."""

import json

import pytest
import torch

from interfaces import api, forecast_bias, suites, sweep
from interfaces.errors import UsageError
from interfaces.grouping import group_name
from interfaces.harness import Experiment, build_model, run_experiment
from interfaces.registry import get_registry

from conftest import run_cli


def _models(tmp_path, forcing=9.0):
    reg = get_registry()
    return (build_model(reg, "lorenz96", {}, tmp_path), build_model(reg, "lorenz96", {"forcing": forcing}, tmp_path))


def test_the_bias_of_a_forcing_error_is_dt_times_the_forcing_difference(tmp_path):
    """Lorenz-96's tendency is linear in F: one RK4 cycle of length dt moves every site by
    dt * dF plus terms of order dt^2 dF. So b is about 0.05 * 1 at every site, the same at each
    (the model is symmetric under rotation of the ring)."""
    model, data = _models(tmp_path)
    b = forecast_bias.estimate(model, data, n=400)
    assert b.shape == (40,) and b.dtype == torch.float64
    assert abs(float(b.mean()) - 0.05) < 0.005
    assert float(b.std()) < 0.2 * float(b.mean())
    # Cached: read back as it was, under the models' options and the code's version.
    (entry,) = (tmp_path / "forecast_bias").glob("*.pt")
    assert torch.equal(forecast_bias.estimate(model, data, n=400), b)
    assert entry.exists()


def test_the_mean_is_over_the_data_models_climatology_and_not_the_forecast_models(tmp_path):
    model, data = _models(tmp_path, forcing=10.0)
    x = data.climatology(100).to(torch.float64)
    expected = (data.forecast(x, None) - model.forecast(x, None)).to(torch.float64).mean(0)
    assert torch.allclose(forecast_bias.estimate(model, data, n=100), expected, rtol=0, atol=1e-12)


def test_the_forecast_models_own_options_give_no_correction_and_the_same_run(tmp_path):
    plain = run_experiment(Experiment(model="lorenz96", method="3dvar", obs="every:2", cycles=30, seed=4,
                                      truth_options={"forcing": 9.0}, cache_dir=str(tmp_path)))
    same = run_experiment(Experiment(model="lorenz96", method="3dvar", obs="every:2", cycles=30, seed=4,
                                     truth_options={"forcing": 9.0}, forecast_bias="forcing=8",
                                     cache_dir=str(tmp_path)))
    assert torch.count_nonzero(same.setup.forecast_bias) == 0
    assert plain.summary["analysis_rmse"] == same.summary["analysis_rmse"]


def test_the_correction_helps_3dvar_in_an_imperfect_twin(tmp_path):
    """The truth runs with F = 9, the forecasts with F = 8: the corrected forecasts are closer."""
    runs = {fb: api.run(model="lorenz96", method="3dvar", obs="every:2", cycles=150, seed=1,
                        truth_options=["forcing=9"], forecast_bias=fb, cache_dir=str(tmp_path))
            for fb in (None, "forcing=9")}
    plain, corrected = (json.loads(runs[k].attrs["summary"]) for k in (None, "forcing=9"))
    assert corrected["background_rmse"] < 0.95 * plain["background_rmse"]
    assert corrected["analysis_rmse"] < plain["analysis_rmse"]
    attrs = runs["forcing=9"].attrs
    assert json.loads(attrs["forecast_bias_options"]) == {"forcing": 9.0}
    assert 0.04 < json.loads(attrs["forecast_bias_rms"])["x"] < 0.06
    assert "forecast_bias_options" not in runs[None].attrs


def test_run_files_and_jobs_without_it_are_unchanged_and_resume_refuses_a_change(tmp_path):
    assert "forecast_bias" not in Experiment(model="lorenz96").settings()
    job = sweep.make_job(model="sw", method="free", obs="random:0.05", cycles=5, seed=0,
                         model_options={"resolution": "32x64"}, truth_options={"jet_speed": 70.0})
    corrected = sweep.make_job(**{**job, "forecast_bias": "jet_speed=70.0"})
    assert sweep.job_hash(job) != sweep.job_hash(corrected)
    assert group_name(job) == "sw-32x64-random0.05-truthjetspeed70.0"
    assert group_name(corrected) == "sw-32x64-random0.05-truthjetspeed70.0-fbiasjetspeed70.0"
    out = tmp_path / "run.nc"
    api.run(model="lorenz96", method="3dvar", cycles=4, seed=2, out=out, truth_options=["forcing=9"],
            forecast_bias="forcing=9", cache_dir=str(tmp_path))
    with pytest.raises(UsageError, match="cannot resume"):
        api.run(model="lorenz96", method="3dvar", cycles=4, seed=2, out=out, resume=True,
                truth_options=["forcing=9"], cache_dir=str(tmp_path))


def test_a_suite_writes_the_spec_one_way_whatever_way_the_user_did():
    defaults = get_registry().model("sw").factory.defaults
    assert forecast_bias.canonical("jet_speed=70; drag_days=7", defaults) == "drag_days=7.0;jet_speed=70.0"
    from argparse import Namespace

    args = Namespace(truth_options=[], model_error=None, forecast_bias=None)
    block = {"truth_options": {"jet_speed": 70.0}, "forecast_bias": "jet_speed=70"}
    assert suites._imperfect(args, block, "sw", get_registry())["forecast_bias"] == "jet_speed=70.0"


@pytest.mark.parametrize("spec, match", [
    ("nope=3", "--forecast-bias 'nope=3': unknown option 'nope' for model 'lorenz96'; valid options: dt, forcing"),
    ("forcing=x", "--forecast-bias 'forcing=x'"),
    ("size=41", "--forecast-bias .* changes the state shape"),
])
def test_a_bad_spec_is_a_one_line_error_naming_it(spec, match, tmp_path):
    with pytest.raises(UsageError, match=match):
        run_experiment(Experiment(model="lorenz96", method="free", cycles=2, forecast_bias=spec,
                                  cache_dir=str(tmp_path)))


def test_the_command_line_says_what_is_wrong_and_exits_non_zero():
    proc = run_cli("run", "--model", "lorenz96", "--method", "free", "--cycles", "2", "--forecast-bias", "nope=3")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("da-harness: error: --forecast-bias 'nope=3': unknown option")
