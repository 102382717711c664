"""losda_plugin: tiny models trained for a few steps (seconds), checking shapes, the checkpoint
round trip and its refusals, that guidance fits the observations better than the prior alone,
and that a seed reproduces a sample; then the quick preset, trained once per module, cycled
against the truth and run through ``check_assimilator``."""

from __future__ import annotations

import fractions
from pathlib import Path

import pytest
import torch

from interfaces.assimilator import Context
from interfaces.errors import DataError, UsageError
from interfaces.harness import Experiment, run_experiment
from interfaces.observations import Observations, build_operator
from interfaces.registry import get_registry
from interfaces.testing import check_assimilator
from losda_plugin import checkpoint
from losda_plugin.geometry import Geometry
from losda_plugin.guidance import ObservationMisfit
from losda_plugin.methods import DPS, L3DVar, LOSDA
from losda_plugin.vae import VAE

TINY = {
    "preset": "quick", "vae_widths": "8", "latent_channels": 1, "vae_steps": 30, "denoiser_width": 8,
    "denoiser_blocks": 1, "denoiser_steps": 30, "pairs": 200,
}
FAST = {"samples": 2, "steps": 4}


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    model = get_registry().model("lorenz96").factory()
    clim = model.climatology(300)
    op = build_operator("every:2", model, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(3)
    truth = model.truth_run(2, gen)
    cache = tmp_path_factory.mktemp("cache")

    def context(seed=0):
        return Context(model=model, operator=op, climatology=clim, members=1, settings={"seed": 0},
                       cache_dir=cache, generator=torch.Generator().manual_seed(seed))

    trained = LOSDA(**TINY)
    summary = trained.train(context())
    xb = model.forecast(truth[:1] + 0.5 * torch.randn(1, 40, generator=gen, dtype=torch.float64))
    y = op(truth[1:2])[0] + torch.randn(op.n_obs, generator=gen, dtype=torch.float64)
    obs = Observations.from_values(y, op.std)
    return {"model": model, "op": op, "context": context, "summary": summary, "xb": xb, "obs": obs,
            "cache": cache}


def prepared(cls, setting, seed=0, **options):
    method = cls(**TINY, **options)
    method.prepare(setting["context"](seed))
    return method


def test_registered_through_the_plugin_hook():
    registry = get_registry()
    for name in ("losda", "dps", "l3dvar"):
        assert registry.assimilator(name).plugin == "losda"


def test_training_writes_a_checkpoint_shared_by_the_three_methods(setting):
    path = setting["summary"]["checkpoint"]
    assert path.endswith(".pt") and "lorenz96-quick-" in path
    assert len(setting["summary"]["reconstruction_rmse"]) == 1
    for cls in (LOSDA, DPS, L3DVar):  # same training options -> same file; nothing retrains
        method = cls(**TINY)
        cfg, _ = method.config(setting["context"]())
        assert str(checkpoint.checkpoint_path(setting["cache"], cfg)) == path


@pytest.mark.parametrize("cls", [LOSDA, DPS, L3DVar])
@pytest.mark.parametrize("members", [1, 3])
def test_analysis_has_the_background_shape_and_dtype(setting, cls, members):
    method = prepared(cls, setting, **({} if cls is L3DVar else FAST))
    xb = setting["xb"].expand(members, -1) + 0.1 * torch.randn(members, 40, dtype=torch.float64)
    xa = method.assimilate(xb, setting["obs"], setting["op"])
    assert xa.shape == xb.shape and xa.dtype == torch.float64 and torch.isfinite(xa).all()


def test_checkpoint_round_trip(setting):
    a, b = prepared(LOSDA, setting), prepared(LOSDA, setting)
    x = setting["xb"].to(torch.float32)
    assert torch.equal(a.prior.encode(x), b.prior.encode(x))
    assert a.prior.report["data_hash"] == setting["summary"]["data_hash"]
    assert a.prior.b_var.shape == a.prior.vae.latent_shape


def test_a_cached_checkpoint_reports_the_training_time_it_recorded(setting):
    # A comparison that reads the prior from the cache must still charge its training cost.
    method = prepared(DPS, setting)
    assert method.train_seconds == pytest.approx(setting["summary"]["train_seconds"]) and method.train_seconds > 0


def test_corrupt_checkpoint_is_refused_in_one_line(setting, tmp_path):
    method = LOSDA(**TINY)
    cfg, geometry = method.config(setting["context"]())
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(DataError) as err:
        checkpoint.load(bad, cfg, geometry)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def _damaged(kind: str, good: Path, bad: Path) -> None:
    data = good.read_bytes()
    if kind == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "not a torch checkpoint":
        bad.write_text("model: lorenz96\n")
    elif kind == "not written by da-harness":
        torch.save({"weights": fractions.Fraction(1, 3)}, bad)  # a class a weights-only load refuses
    elif kind == "inconsistent":
        payload = torch.load(good, map_location="cpu", weights_only=True)
        payload["config"]["kl_weight"] = 0.5  # edited without its digest
        torch.save(payload, bad)


@pytest.mark.parametrize("kind", ["truncated", "empty", "not a torch checkpoint", "not written by da-harness",
                                  "inconsistent"])
def test_a_damaged_checkpoint_is_refused_saying_what_is_wrong_with_it(setting, tmp_path, kind):
    method = LOSDA(**TINY)
    cfg, geometry = method.config(setting["context"]())
    bad = tmp_path / "bad.pt"
    _damaged(kind, checkpoint.checkpoint_path(setting["cache"], cfg), bad)
    with pytest.raises(DataError) as err:
        checkpoint.load(bad, cfg, geometry)
    message = str(err.value)
    assert kind in message and str(bad) in message and "delete it" in message and "\n" not in message


def test_mismatched_checkpoint_is_refused_naming_the_mismatch(setting):
    method = LOSDA(**TINY)
    cfg, geometry = method.config(setting["context"]())
    path = checkpoint.checkpoint_path(setting["cache"], cfg)
    other = {**cfg, "kl_weight": 0.5}
    with pytest.raises(DataError, match="kl_weight") as err:
        checkpoint.load(path, other, geometry)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("cls", [LOSDA, DPS])
def test_guidance_lowers_the_observation_misfit(setting, cls):
    guided = prepared(cls, setting, **FAST)
    options = {"iters": 0} if cls is LOSDA else {"zeta": 0.0}
    unguided = prepared(cls, setting, **FAST, **options)
    op, obs = setting["op"], setting["obs"]
    misfit = ObservationMisfit(lambda x: x, op, obs.values, obs.std)
    xg = guided.assimilate(setting["xb"], obs, op)
    xu = unguided.assimilate(setting["xb"], obs, op)
    assert float(misfit(xg.float())) < float(misfit(xu.float()))


def test_l3dvar_fits_observations_better_than_its_decoded_background(setting):
    method = prepared(L3DVar, setting)
    op, obs = setting["op"], setting["obs"]
    misfit = ObservationMisfit(lambda x: x, op, obs.values, obs.std)
    xa = method.assimilate(setting["xb"], obs, op)
    start = method.prior.decode(method.prior.encode(setting["xb"]))
    assert float(misfit(xa.float())) < float(misfit(start))


def test_a_seed_reproduces_a_sample(setting):
    op, obs, xb = setting["op"], setting["obs"], setting["xb"]
    first = prepared(LOSDA, setting, seed=5, **FAST).assimilate(xb, obs, op)
    again = prepared(LOSDA, setting, seed=5, **FAST).assimilate(xb, obs, op)
    other = prepared(LOSDA, setting, seed=6, **FAST).assimilate(xb, obs, op)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_bad_options_are_usage_errors(setting):
    with pytest.raises(UsageError, match="preset"):
        LOSDA(preset="huge").config(setting["context"]())
    with pytest.raises(UsageError, match="output"):
        LOSDA(output="both")


def test_sphere_padding_wraps_longitude_and_crosses_the_poles():
    geometry = Geometry("sphere", (4, 8), 1, True)
    x = torch.arange(32.0).view(1, 1, 4, 8)
    padded = geometry.pad(x, 1)
    assert padded.shape == (1, 1, 6, 10)
    assert torch.equal(padded[0, 0, 1:-1, 0], x[0, 0, :, -1])  # west edge wraps to the east
    assert torch.equal(padded[0, 0, 0, 1:-1], x[0, 0, 0].roll(4))  # over the north pole
    assert torch.equal(padded[0, 0, -1, 1:-1], x[0, 0, -1].roll(4))


def test_sphere_vae_shapes():
    geometry = Geometry("sphere", (8, 16), 3, True)
    vae = VAE(geometry, [4, 8], 2, torch.zeros(3, 8, 16), torch.ones(3, 8, 16))
    x = torch.randn(2, 3, 8, 16)
    z = vae.encode(x)
    assert z.shape == (2, 2, 4, 8)
    assert vae.decode(z).shape == x.shape


# --- against the truth, with the quick preset ----------------------------------------------
# One quick prior per module (trained by the first run that needs it, into a temp cache), then
# short cycled runs on Lorenz-96 with every other variable observed, on a fixed seed.
QUICK = {"preset": "quick"}


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    cache = tmp_path_factory.mktemp("quick-cache")

    def run(method, **options):
        exp = Experiment(model="lorenz96", method=method, obs="every:2", cycles=40, burn_in=10, seed=11,
                         method_options=options, cache_dir=str(cache))
        return run_experiment(exp).summary

    return {"cache": cache, "run": run}


@pytest.mark.parametrize("method", ["losda", "dps", "l3dvar"])
def test_cycled_analysis_is_far_closer_to_the_truth_than_the_free_run_and_climatology(quick_runs, method):
    run = quick_runs["run"]
    free, clim = run("free")["analysis_rmse"], run("climatology")["analysis_rmse"]
    summary = run(method, **QUICK)
    # Measured on seed 11 with a seed-0 quick prior: free 4.69, climatology 3.53, losda 0.91, dps 1.40, l3dvar 1.40.
    assert summary["analysis_rmse"] < 0.4 * free and summary["analysis_rmse"] < 0.5 * clim, (summary["analysis_rmse"], free, clim)
    assert summary["analysis_rmse"] < summary["background_rmse"]


@pytest.mark.parametrize("cls", [LOSDA, DPS, L3DVar])
def test_latent_methods_honour_the_assimilator_contract(quick_runs, cls):
    report = check_assimilator(cls, options=QUICK, cache_dir=str(quick_runs["cache"]))
    assert report["checks"] == ["shape", "dtype", "finite", "inputs untouched", "diagnostics", "determinism",
                                "QC-flagged observations unused", "state_dict"]
