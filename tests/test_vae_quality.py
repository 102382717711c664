"""Issue 14 items 1-2: `da-harness train --json` reports the VAE's reconstruction RMSE per variable
on held-out validation states (checked against an independent computation from the checkpoint),
the training time and the validation curves; training pairs span background errors from
LETKF-level to free-run-level by construction."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from interfaces.cli import main
from interfaces.errors import UsageError
from interfaces.harness import CLIMATOLOGY_SIZE
from interfaces.registry import get_registry
from losda_plugin import checkpoint
from losda_plugin.config import TRAIN_DEFAULTS, resolve_config
from losda_plugin.geometry import Geometry
from losda_plugin.methods import TRAIN_SEED
from losda_plugin.training import make_pairs, perturbed, validation_split
from losda_plugin.vae import VAE

TINY = {"preset": "quick", "vae_widths": "8", "latent_channels": 1, "vae_steps": 40, "denoiser_width": 8,
        "denoiser_blocks": 1, "denoiser_steps": 40, "pairs": 200}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    argv = ["train", "--model", "lorenz96", "--method", "losda", "--cache-dir", str(cache), "--json", "--no-progress"]
    for k, v in TINY.items():
        argv += ["--set", f"{k}={v}"]
    return argv, cache


def test_train_json_reports_reconstruction_per_variable_time_and_curves(trained, capsys):
    argv, _ = trained
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert len(lines) == 1
    assert summary["recon_rmse_x"] > 0 and math.isfinite(summary["recon_rmse_x"])
    assert summary["train_seconds"] > 0
    # 20 evenly spaced points of the VAE's validation loss, ending at the last step
    steps, curve = summary["val_loss_steps"], summary["val_loss"]
    assert steps == sorted(steps) and steps[-1] == TINY["vae_steps"] and len(curve) == len(steps) >= 10
    assert all(math.isfinite(c) and c > 0 for c in curve)
    assert curve[-1] < curve[0]  # training on 180 pairs lowers the held-out loss
    den_steps, den_curve = summary["denoiser_val_loss_steps"], summary["denoiser_val_loss_curve"]
    assert den_steps[-1] == TINY["denoiser_steps"] and den_curve[-1] == pytest.approx(summary["denoiser_val_loss"])
    # The held-out pairs' backgrounds span small to climatological errors
    q = summary["background_error"]
    assert q["q05"] < 0.1 and q["q95"] > 0.7
    trained[1].joinpath("summary.json").write_text(lines[-1])


def test_reported_reconstruction_equals_an_independent_computation_on_the_validation_states(trained):
    _, cache = trained
    summary = json.loads(cache.joinpath("summary.json").read_text())
    model = get_registry().model("lorenz96").factory()
    clim = model.climatology(CLIMATOLOGY_SIZE).to(torch.float64)
    geometry = Geometry.of(model)
    cfg = resolve_config({**TRAIN_DEFAULTS, **TINY}, model, geometry)
    prior = checkpoint.load(checkpoint.checkpoint_path(cache, cfg), cfg, geometry)
    # The same pairs: training draws them first from a generator seeded with TRAIN_SEED.
    truth, background, _ = make_pairs(model, clim, cfg["pairs"], cfg["error_min"], cfg["error_max"],
                                      torch.Generator().manual_seed(TRAIN_SEED))
    n_val = validation_split(cfg["pairs"])
    states = torch.cat([truth[:n_val], background[:n_val]])
    with torch.no_grad():
        recon = prior.decode(prior.encode(states))
    err = (recon.double() - states.double()).numpy()
    independent = float(np.sqrt(np.mean(err ** 2)))  # Lorenz-96: equal weights
    assert summary["recon_rmse_x"] == pytest.approx(independent, rel=1e-5)
    # ... and it is not the training states' figure
    train_states = torch.cat([truth[n_val:], background[n_val:]])
    with torch.no_grad():
        train_err = float((prior.decode(prior.encode(train_states)) - train_states).pow(2).mean().sqrt())
    assert train_err != pytest.approx(independent, rel=1e-5)


def test_perturbations_have_the_requested_size_and_the_largest_is_a_climatological_state():
    model = get_registry().model("lorenz96").factory()
    clim = model.climatology(2000).to(torch.float64)
    std = (clim - clim.mean(0)).std()
    x = clim[:1000]
    for size in (0.02, 0.3, 1.0):
        xb = perturbed(x, clim, torch.full((1000,), size, dtype=torch.float64), torch.Generator().manual_seed(1))
        rms = float((xb - x).pow(2).mean().sqrt() / std)
        assert rms == pytest.approx(size, rel=0.1)
        # the amplitude of the anomaly stays climatological at every size
        assert float((xb - clim.mean(0)).std() / std) == pytest.approx(1.0, rel=0.1)
    xb = perturbed(x[:3], clim, torch.full((3,), math.sqrt(2), dtype=torch.float64), torch.Generator().manual_seed(2))
    j = torch.randint(0, clim.shape[0], (3,), generator=torch.Generator().manual_seed(2))
    assert torch.allclose(xb, clim[j], atol=1e-9)


def test_pair_errors_are_log_uniform_over_the_requested_range():
    model = get_registry().model("lorenz96").factory()
    clim = model.climatology(2000).to(torch.float64)
    _, _, sizes = make_pairs(model, clim, 3000, 0.02, 1.414, torch.Generator().manual_seed(0))
    logs = torch.log(sizes)
    assert float(sizes.min()) >= 0.02 and float(sizes.max()) <= 1.414
    # log-uniform: each third of the log range holds about a third of the pairs
    edges = torch.linspace(math.log(0.02), math.log(1.414), 4)
    counts = [int(((logs >= a) & (logs < b)).sum()) for a, b in zip(edges[:-1], edges[1:])]
    assert all(abs(c - 1000) < 120 for c in counts), counts


@pytest.mark.parametrize("options, words", [
    ({"error_min": 0.5, "error_max": 0.1}, "error_min"),
    ({"error_max": 3.0}, "error_max"),
    ({"vae_decoder": "deep"}, "vae_decoder"),
])
def test_bad_training_options_are_refused_in_one_line(options, words):
    model = get_registry().model("lorenz96").factory()
    with pytest.raises(UsageError, match=words):
        resolve_config({**TRAIN_DEFAULTS, **options}, model, Geometry.of(model))


def test_residual_decoder_adds_a_linear_path_that_shapes_the_output():
    model = get_registry().model("sw").factory()
    geometry = Geometry.of(model)
    mean, std = torch.zeros(3, 32, 64), torch.ones(3, 32, 64)
    torch.manual_seed(0)
    vae = VAE(geometry, [8, 8], 4, mean, std, decoder="residual")
    z = torch.randn(2, *vae.latent_shape)
    out = vae.decode(z)
    assert out.shape == (2, 3, 32, 64)
    with torch.no_grad():
        vae.decoder.linear_out.conv.weight.zero_()
        vae.decoder.linear_out.conv.bias.zero_()
    assert not torch.allclose(vae.decode(z), out)


def test_strong_preset_keeps_the_sphere_grid_in_the_latent_and_is_refused_elsewhere():
    from losda_plugin.prior import build_networks

    sw = get_registry().model("sw").factory()
    geometry = Geometry.of(sw)
    cfg = resolve_config({**TRAIN_DEFAULTS, "preset": "strong"}, sw, geometry)
    vae, denoiser = build_networks(cfg, geometry, torch.zeros(3, 32, 64), torch.ones(3, 32, 64))
    assert vae.latent_shape == (4, 32, 64) and vae.decoder.linear is not None
    z = torch.randn(2, *vae.latent_shape)
    assert denoiser(z, torch.tensor(0.5), z).shape == z.shape
    l96 = get_registry().model("lorenz96").factory()
    with pytest.raises(UsageError, match="unknown preset 'strong' for model 'lorenz96'; valid presets: full, quick$"):
        resolve_config({**TRAIN_DEFAULTS, "preset": "strong"}, l96, Geometry.of(l96))
