"""--device: methods place their work on Context.device and hand back CPU float64 tensors.

Without CUDA the plumbing is checked with the ``meta`` device (tensors without storage: what
``prepare`` builds must land there) and with an explicit CPU device; the CUDA tests at the end
run short experiments on the GPU and compare them with the same runs on the CPU.
"""

from __future__ import annotations

import json

import netCDF4  # noqa: F401 - the run file below is netCDF
import pytest

from interfaces import suites
import torch
import xarray as xr

import baselines.enkf
from baselines.enkf import EnKF
from baselines.ensf import EnSF
from baselines.letkf import LETKF
from baselines.var3d import Var3D
from interfaces.assimilator import Assimilator, Context
from interfaces.device import device_of, to_cpu, to_device
from interfaces.errors import PluginError, UsageError
from interfaces.harness import Experiment, _check_analysis, run_experiment
from interfaces.observations import Observations, build_operator
from interfaces.registry import get_registry
from losda_plugin.methods import DPS, L3DVar, LOSDA

META = torch.device("meta")
TINY = {  # a prior trained for a few steps: device placement, not accuracy
    "preset": "quick", "vae_widths": "8", "latent_channels": 1, "vae_steps": 20, "denoiser_width": 8,
    "denoiser_blocks": 1, "denoiser_steps": 20, "pairs": 100,
}


@pytest.fixture(scope="module")
def l96(tmp_path_factory):
    model = get_registry().model("lorenz96").factory()
    clim = model.climatology(300).to(torch.float64)
    op = build_operator("every:2", model, torch.Generator().manual_seed(0))
    cache = tmp_path_factory.mktemp("device-cache")

    def context(device=torch.device("cpu"), members=1, seed=0):
        return Context(model=model, operator=op, climatology=clim, members=members, settings={"seed": 0},
                       cache_dir=cache, generator=torch.Generator().manual_seed(seed), device=device)

    LOSDA(**TINY).train(context())  # on the CPU, once; prepare then loads it onto the device asked
    gen = torch.Generator().manual_seed(1)
    truth = clim[7]
    ens = truth + 0.5 * torch.randn(20, 40, generator=gen, dtype=torch.float64)
    y = op(truth[None])[0] + torch.randn(op.n_obs, generator=gen, dtype=torch.float64)
    return {"model": model, "op": op, "context": context, "ens": ens, "obs": Observations.from_values(y, op.std)}


def _tensors(obj):
    return [v for v in vars(obj).values() if isinstance(v, torch.Tensor)]


def test_to_device_moves_a_copy_of_nested_operators_and_leaves_the_original(l96):
    model = l96["model"]
    op = build_operator("arctan+every:4", model, torch.Generator().manual_seed(0))
    moved = to_device(op, META)
    assert type(moved) is type(op) and moved is not op
    assert _tensors(moved) and all(t.device == META for t in _tensors(moved))
    assert all(t.device == META for t in _tensors(moved.inner))  # the nested linear part too
    assert all(t.device.type == "cpu" for t in (*_tensors(op), *_tensors(op.inner)))
    obs = to_device(l96["obs"], META)
    assert obs.values.device == META and obs.std.device == META and l96["obs"].values.device.type == "cpu"


def test_to_cpu_restores_the_harness_contract():
    out = to_cpu(torch.ones(2, 3, dtype=torch.float32), like=torch.zeros(2, 3, dtype=torch.float64))
    assert out.device.type == "cpu" and out.dtype == torch.float64
    assert device_of(None) == torch.device("cpu")


@pytest.mark.parametrize("cls", [LOSDA, DPS, L3DVar])
def test_latent_methods_load_their_prior_onto_the_context_device(l96, cls):
    method = cls(**TINY)
    method.prepare(l96["context"](META))
    prior = method.prior
    tensors = [*prior.vae.parameters(), *prior.vae.buffers(), *prior.denoiser.parameters(),
               *prior.denoiser.buffers(), prior.b_var]
    assert prior.device == META and all(t.device == META for t in tensors)


def test_3dvar_keeps_its_background_covariance_on_the_context_device(l96):
    method = Var3D()
    method.prepare(l96["context"](META))
    assert _tensors(method.covariance) and all(t.device == META for t in _tensors(method.covariance))


def test_letkf_localisation_weights_live_on_the_context_device(l96):
    method = LETKF()
    method.prepare(l96["context"](META, members=20))
    assert method._weights(l96["op"]).device == META


def test_enkf_computes_its_analysis_on_the_context_device(l96, monkeypatch):
    # On meta the analysis has shapes but no values; catch it on its way back to the harness.
    seen = []

    def spy(result, like):
        seen.append(result.device)
        return torch.zeros_like(like)

    monkeypatch.setattr(baselines.enkf, "to_cpu", spy)
    for variant in ("etkf", "stochastic"):
        method = EnKF(variant=variant)
        method.prepare(l96["context"](META, members=20))
        method.assimilate(l96["ens"], l96["obs"], l96["op"])
    assert seen == [META, META]


@pytest.mark.parametrize("name, cls, options, members", [
    ("3dvar", Var3D, {}, 1), ("enkf", EnKF, {"variant": "stochastic"}, 20), ("letkf", LETKF, {}, 20),
    ("losda", LOSDA, {**TINY, "samples": 2, "steps": 3}, 1), ("dps", DPS, {**TINY, "samples": 2, "steps": 3}, 1),
    ("l3dvar", L3DVar, {**TINY, "iters": 5}, 1), ("ensf", EnSF, {"steps": 20}, 20),
])
def test_an_explicit_cpu_device_returns_the_same_cpu_float64_analysis(l96, name, cls, options, members):
    ens = l96["ens"][:members]
    out = []
    for device in (None, torch.device("cpu")):
        method = cls(**options)
        method.prepare(l96["context"]() if device is None else l96["context"](device))
        out.append(method.assimilate(ens.clone(), l96["obs"], l96["op"]))
    assert out[1].device.type == "cpu" and out[1].dtype == torch.float64 and out[1].shape == ens.shape
    assert torch.equal(out[0], out[1]), name


class CpuOnly(Assimilator):
    name = "cpu-only"

    def assimilate(self, background, observations, operator):
        return background.clone()


def test_a_method_that_does_not_declare_a_device_refuses_it_in_prepare_in_one_line(l96):
    with pytest.raises(UsageError, match=r"method 'cpu-only' cannot run on --device meta; it runs on: cpu$"):
        CpuOnly().prepare(l96["context"](META))
    CpuOnly().prepare(l96["context"]())  # the CPU is fine


def test_the_harness_refuses_an_analysis_left_on_another_device_naming_the_method():
    background = torch.zeros(1, 40, dtype=torch.float64)
    with pytest.raises(PluginError, match="method 'm' .*returned its analysis on meta"):
        _check_analysis(torch.zeros(1, 40, device=META), background, "m", "p")


def test_the_run_file_records_the_device(tmp_path):
    out = tmp_path / "free.nc"
    run_experiment(Experiment(model="lorenz96", method="free", cycles=3, device="cpu", out=str(out)))
    with xr.open_dataset(out) as ds:
        assert ds.attrs["device"] == "cpu"


# --- on a GPU -------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(scope="module")
def gpu_cache(tmp_path_factory):
    """The quick prior trained on the GPU through the CLI (as a user would), in a temp cache."""
    from interfaces.cli import main

    cache = tmp_path_factory.mktemp("gpu-cache")
    code = main(["train", "--model", "lorenz96", "--method", "losda", "--set", "preset=quick", "--device", "cuda",
                 "--cache-dir", str(cache), "--no-progress", "--steps", "300"])
    assert code == 0
    return cache


@cuda
def test_training_on_cuda_writes_a_checkpoint_that_loads_on_the_cpu(gpu_cache):
    paths = list((gpu_cache / "losda").glob("lorenz96-quick-*.pt"))
    assert len(paths) == 1
    payload = torch.load(paths[0], map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in payload["vae"].values())


@cuda
@pytest.mark.parametrize("method, options, tolerance", [
    ("3dvar", {}, 1e-8), ("letkf", {}, 1e-8), ("enkf", {"variant": "stochastic"}, 1e-8),
    # EnSF's noise is drawn on the CPU generator and moved; hundreds of float64 steps on the GPU.
    ("ensf", {"steps": 50}, 1e-6),
    # float32 networks: cuDNN and CPU kernels round differently, and L-BFGS / guidance amplify it.
    ("losda", {"preset": "quick"}, 0.05), ("dps", {"preset": "quick"}, 0.05), ("l3dvar", {"preset": "quick"}, 0.05),
])
def test_a_cuda_run_agrees_with_the_cpu_run(gpu_cache, method, options, tolerance):
    runs = {}
    for device in ("cpu", "cuda"):
        exp = Experiment(model="lorenz96", method=method, obs="every:2", cycles=6, burn_in=0, seed=3,
                         method_options=dict(options), device=device, cache_dir=str(gpu_cache))
        runs[device] = run_experiment(exp)
    cpu, gpu = runs["cpu"].recorder.analysis, runs["cuda"].recorder.analysis
    assert runs["cuda"].setup.context.device.type == "cuda"
    # Relative to the analysis error itself: the device must not change the answer.
    error = runs["cpu"].summary["analysis_rmse"]
    assert abs(runs["cuda"].summary["analysis_rmse"] - error) <= tolerance * max(error, 1.0)
    assert float(abs(cpu - gpu).max()) <= tolerance * max(error, 1.0) * 10


# --- compare and tune on a device ----------------------------------------------------------
COMPARE = ["compare", "--model", "lorenz96", "--methods", "free,3dvar", "--obs", "every:2", "--cycles", "6",
           "--seeds", "1", "--serial", "--no-plots", "--set", "3dvar.b_source=climatology"]


def test_compare_and_tune_refuse_a_device_this_machine_lacks_before_any_work(tmp_path, cli, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = cli(*COMPARE, "--device", "cuda", "--out", tmp_path / "cmp")
    assert code == 2 and err.strip() == "da-harness: error: --device cuda is not available here; valid devices: cpu"
    assert not (tmp_path / "cmp").exists()
    code, _, err = cli("tune", "--method", "3dvar", "--seeds", "100", "--grid", "scale=0.5,1", "--device", "tpu",
                       "--out", tmp_path / "t.toml", "--runs", tmp_path / "runs")
    assert code == 2 and "--device tpu is not available here" in err and not (tmp_path / "t.toml").exists()


def test_a_device_job_is_its_own_job_and_a_cpu_job_keeps_its_hash(monkeypatch):
    """Off the CPU the job carries its device (a CUDA run is never read back as the CPU one);
    on the CPU the job has no device field, so the run files of earlier sweeps still match."""
    from argparse import Namespace

    from interfaces.sweep import job_hash

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    base = dict(options=["3dvar.b_source=climatology"], methods="free,3dvar", model="lorenz96", obs=["every:2"],
                obs_std=None, seeds="2", cycles=6, burn_in=None, members=None)
    on_cpu = suites.build_jobs(Namespace(**base, device="cpu"), None, get_registry())
    on_gpu = suites.build_jobs(Namespace(**base, device="cuda"), None, get_registry())
    assert len(on_cpu) == len(on_gpu) == 4
    assert all("device" not in j for j in on_cpu) and all(j["device"] == "cuda" for j in on_gpu)
    assert on_cpu == suites.build_jobs(Namespace(**base), None, get_registry())  # no --device at all
    assert not {job_hash(j) for j in on_cpu} & {job_hash(j) for j in on_gpu}
    assert [{k: v for k, v in j.items() if k != "device"} for j in on_gpu] == on_cpu


@cuda
def test_compare_on_cuda_agrees_with_the_cpu_and_says_where_it_ran(tmp_path, cli):
    code, out, err = cli(*COMPARE, "--json", "--out", tmp_path / "cpu")
    assert code == 0, err
    cpu = {r["method"]: r for r in json.loads(out)["tables"][0]["rows"]}
    code, out, err = cli(*COMPARE, "--json", "--device", "cuda", "--out", tmp_path / "gpu")
    assert code == 0, err
    gpu = {r["method"]: r for r in json.loads(out)["tables"][0]["rows"]}
    for method in ("free", "3dvar"):
        assert abs(gpu[method]["analysis_rmse"] - cpu[method]["analysis_rmse"]) <= 1e-8 * max(cpu[method]["analysis_rmse"], 1)
    assert "methods trained and analysed on cuda" in (tmp_path / "gpu" / "results.md").read_text()
