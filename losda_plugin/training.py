"""Training data and loops: (truth, background) pairs, then the VAE, then the conditional
denoiser on the latent increment z_truth - z_background.

A background is a one-cycle forecast of a perturbed earlier truth. The background errors must
span what cycled methods meet, from a tuned LETKF's (a few % of the climatological std) to a
free run's (sqrt(2) climatological std: an unrelated state), so each pair draws its initial
error size e (RMS, in units of the climatological anomaly std) log-uniformly in
[error_min, error_max] and perturbs by *rotating* the truth's anomaly towards an independent
climatological state's:

    x_b0 = m + cos(t) (x - m) + sin(t) (c - m),    e = 2 sin(t / 2),

with m the climatological mean. The perturbation has the climatology's spatial structure (not
white noise that a smooth model would never produce), the perturbed state keeps the
climatological amplitude at every size (adding a large difference would not: it would leave the
attractor), and e = sqrt(2) gives exactly a climatological state, the free run's error. The
truths are trajectories started from the model's climatology run, which has its own fixed seed:
never a scored experiment's truth.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time

import torch
from tqdm import tqdm

from interfaces.errors import UsageError

from .geometry import Geometry
from .prior import LatentPrior, build_networks
from .schedule import loss_weight, training_sigmas


def _bar(total: int, desc: str, progress: bool):
    return tqdm(range(total), desc=desc, file=sys.stderr, disable=not progress, leave=False, mininterval=1.0)


def normalisation(climatology: torch.Tensor, geometry: Geometry):
    """Climatological mean field and per-channel anomaly std, in network layout."""
    clim = geometry.to_net(climatology.to(torch.float64))
    mean = clim.mean(0)
    dims = [0, *range(2, clim.dim())]
    std = (clim - mean).std(dim=dims).clamp_min(1e-8)
    return mean, std.view(-1, *([1] * geometry.dims)).expand_as(mean).contiguous()


def error_sizes(n: int, error_min: float, error_max: float, generator) -> torch.Tensor:
    """Initial error sizes (RMS, climatological std units), log-uniform in [error_min, error_max]."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return error_min * torch.exp(math.log(error_max / error_min) * u)


def perturbed(x: torch.Tensor, climatology: torch.Tensor, sizes: torch.Tensor, generator) -> torch.Tensor:
    """``x`` rotated towards independent climatological states by angles whose RMS error is
    ``sizes`` (see the module docstring)."""
    mean = climatology.mean(0)
    j = torch.randint(0, climatology.shape[0], (x.shape[0],), generator=generator)
    angle = 2 * torch.asin((sizes / 2).clamp(max=1.0))
    view = (-1, *([1] * (x.dim() - 1)))
    return mean + angle.cos().view(view) * (x - mean) + angle.sin().view(view) * (climatology[j] - mean)


def make_pairs(model, climatology: torch.Tensor, n_pairs: int, error_min: float, error_max: float,
               generator: torch.Generator, progress: bool = False, chunk: int = 2000, background_model=None):
    """(truth, background) pairs along short trajectories started from climatological states;
    also the initial error size of each pair. With ``background_model`` the backgrounds are its
    forecasts (from the perturbed states) and the truths ``model``'s."""
    if not 0 < error_min <= error_max <= 2:
        raise UsageError(f"options error_min and error_max need 0 < error_min <= error_max <= 2, "
                         f"got {error_min} and {error_max}")
    n_start = min(climatology.shape[0], n_pairs, chunk)
    x = climatology[torch.randperm(climatology.shape[0], generator=generator)[:n_start]].clone()
    truths, backgrounds, sizes = [], [], []
    steps = -(-n_pairs // n_start)
    for _ in _bar(steps, "losda data", progress):
        size = error_sizes(x.shape[0], error_min, error_max, generator)
        if background_model is None:
            both = model.forecast(torch.cat([x, perturbed(x, climatology, size, generator)]), generator)
            truth, background = both[: x.shape[0]], both[x.shape[0]:]
        else:
            start = perturbed(x, climatology, size, generator)
            truth, background = model.forecast(x, generator), background_model.forecast(start, generator)
        truths.append(truth)
        backgrounds.append(background)
        sizes.append(size)
        x = truth
    truth = torch.cat(truths)[:n_pairs].to(torch.float32)
    background = torch.cat(backgrounds)[:n_pairs].to(torch.float32)
    return truth, background, torch.cat(sizes)[:n_pairs]


def validation_split(n_pairs: int) -> int:
    """How many of the first pairs are held out: never trained on, the VAE's reconstruction
    RMSE and both validation curves are measured on them."""
    return max(1, n_pairs // 10)


def background_error_quantiles(truth, background, std, geometry) -> dict[str, float]:
    """The 5/50/95 % quantiles of the pairs' background errors after the forecast (RMS over
    the grid, in climatological std units): what the prior was trained to correct."""
    err = (geometry.to_net(background.double() - truth.double()) / std.to(torch.float64)).pow(2).flatten(1).mean(1).sqrt()
    q = torch.quantile(err, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64))
    return {"q05": float(q[0]), "q50": float(q[1]), "q95": float(q[2])}


def data_hash(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _lr(step: int, total: int, base: float) -> float:
    """Short warm-up, then cosine decay to 5 % (quick convergence in few steps)."""
    warm = min(1.0, (step + 1) / max(1, total // 20))
    return base * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / total)))


def reconstruction_rmse(vae, states: torch.Tensor, weights: torch.Tensor, geometry: Geometry) -> list[float]:
    """Area-weighted RMSE of decode(encode(x)) per variable, in physical units."""
    out = []
    with torch.no_grad():
        errs = []
        for part in states.split(256):
            errs.append(geometry.to_net(vae.decode(vae.encode(part)) - part).pow(2))
        err = torch.cat(errs).mean(0)  # (channels, *spatial)
    w = weights.to(err.device, err.dtype)
    for c in range(err.shape[0]):
        out.append(float((err[c] * w).sum().div(w.sum()).sqrt()))
    return out


def validation_loss(vae, val: torch.Tensor) -> float:
    """Reconstruction MSE of the encoder mean (normalised units, per element) on held-out states:
    the quantity the reconstruction RMSE reports, without the sampling noise of training."""
    with torch.no_grad():
        total = 0.0
        for part in val.split(256):
            xn = vae.normalise(part)
            mean, _ = vae.encoder(xn)
            total += float((vae.decoder(mean) - xn).pow(2).mean()) * part.shape[0]
    return total / val.shape[0]


#: Points on the validation curves per training run.
CURVE_POINTS = 20


def train_vae(vae, states: torch.Tensor, cfg: dict, generator, progress: bool, steps: int, weights,
              val: torch.Tensor | None = None) -> dict:
    """Train on ``states``; the reconstruction RMSE and the validation curve are measured on the
    held-out ``val`` states (default: the first tenth of ``states``, then not trained on)."""
    if val is None:
        n_val = max(1, states.shape[0] // 10)
        val, states = states[:n_val], states[n_val:]
    train = states
    val = val[:512]
    base_lr = float(cfg.get("vae_lr", 2e-3))
    opt = torch.optim.Adam(vae.parameters(), lr=base_lr)
    batch = min(cfg["vae_batch"], train.shape[0])
    every = max(1, steps // CURVE_POINTS)
    curve = []
    bar = _bar(steps, "losda VAE", progress)
    t0 = time.perf_counter()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, base_lr)
        idx = torch.randint(0, train.shape[0], (batch,), generator=generator).to(train.device)
        rec, kl = vae.elbo_terms(train[idx], generator)
        loss = rec + cfg["kl_weight"] * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % every == 0 or step + 1 == steps:
            vae.eval()
            curve.append([step + 1, validation_loss(vae, val)])
            vae.train()
        if progress and step % 100 == 0:
            bar.set_postfix(rec=f"{rec.item():.2e}", kl=f"{kl.item():.2f}")
    vae.eval()
    with torch.no_grad():
        val_rec, val_kl = vae.elbo_terms(val, torch.Generator().manual_seed(0))
        # Scale latents to unit std per channel so noise levels mean the same on every testbed.
        mean, _ = vae.encode_stats(train[:2000])
        dims = [0, *range(2, mean.dim())]
        vae.latent_scale.copy_(mean.std(dim=dims).clamp_min(1e-6))
    rmse = reconstruction_rmse(vae, val, weights, vae.geometry)
    report = {"vae_seconds": time.perf_counter() - t0, "vae_val_rec": float(val_rec), "vae_val_kl": float(val_kl),
              "reconstruction_rmse": rmse, "val_states": int(val.shape[0]),
              "val_loss_steps": [c[0] for c in curve], "val_loss": [c[1] for c in curve]}
    if progress:
        print(f"losda: VAE trained in {report['vae_seconds']:.0f}s; validation reconstruction RMSE per variable: "
              + ", ".join(f"{r:.4g}" for r in rmse), file=sys.stderr)
    return report


def encode_all(vae, states: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([vae.encode(p) for p in states.split(256)])


def train_denoiser(denoiser, z: torch.Tensor, z_b: torch.Tensor, cfg: dict, generator, progress: bool,
                   steps: int, desc: str = "losda denoiser", lr: float = 1e-3) -> dict:
    n_val = validation_split(z.shape[0])
    sd = float(denoiser.sigma_data)
    opt = torch.optim.Adam(denoiser.parameters(), lr=lr)
    batch = min(cfg["denoiser_batch"], z.shape[0] - n_val)
    view = (-1, *([1] * (z.dim() - 1)))

    def loss_of(zz, bb, gen):
        # Drawn on the (CPU) generator, then moved: the same numbers on every device.
        sigma = training_sigmas(zz.shape[0], sd, gen).to(zz.device)
        noisy = zz + sigma.view(view) * torch.randn(zz.shape, generator=gen).to(zz.device)
        err = (denoiser(noisy, sigma, bb) - zz).pow(2).flatten(1).mean(1)
        return (loss_weight(sigma, sd) * err).mean()

    def val_loss():
        denoiser.eval()
        with torch.no_grad():
            out = float(loss_of(z[:n_val][:1024], z_b[:n_val][:1024], torch.Generator().manual_seed(0)))
        denoiser.train()
        return out

    every = max(1, steps // CURVE_POINTS)
    curve = []
    bar = _bar(steps, desc, progress)
    t0 = time.perf_counter()
    denoiser.train()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, lr)
        idx = (n_val + torch.randint(0, z.shape[0] - n_val, (batch,), generator=generator)).to(z.device)
        loss = loss_of(z[idx], z_b[idx], generator)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % every == 0 and step + 1 < steps:
            curve.append([step + 1, val_loss()])
        if progress and step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    val = val_loss()
    curve.append([steps, val])
    denoiser.eval()
    seconds = time.perf_counter() - t0
    if progress:
        print(f"losda: {desc} trained in {seconds:.0f}s; validation loss {val:.4f} (1.0 = predicting z_b)", file=sys.stderr)
    name = desc.split()[-1]
    return {f"{name}_seconds": seconds, f"{name}_val_loss": val,
            f"{name}_val_loss_steps": [c[0] for c in curve], f"{name}_val_loss_curve": [c[1] for c in curve]}


def train_prior(model, climatology: torch.Tensor, cfg: dict, seed: int, progress: bool = False,
                steps: int | None = None, device: torch.device | str = "cpu",
                background_model=None) -> tuple[LatentPrior, str]:
    """Train the VAE then the denoiser from scratch on ``device``; returns the prior and the
    data hash. The training pairs come from the model's forecasts on the CPU; the weights are
    initialised on the CPU from the seed, so every device starts from the same networks."""
    geometry = Geometry.of(model)
    generator = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    truth, background, sizes = make_pairs(model, climatology, cfg["pairs"], cfg["error_min"], cfg["error_max"],
                                          generator, progress, background_model=background_model)
    digest = data_hash(truth, background)
    mean, std = normalisation(climatology, geometry)
    with torch.random.fork_rng():  # weight initialisation from the seed, without touching the caller's RNG
        torch.manual_seed(seed)
        vae, denoiser = build_networks(cfg, geometry, mean, std)
    vae.to(device)
    denoiser.to(device)
    data_seconds = time.perf_counter() - t0
    vae_steps = steps or cfg["vae_steps"]
    den_steps = steps or cfg["denoiser_steps"]
    # The VAE learns truths and backgrounds alike: both are model states. The first pairs are
    # held out (validation_split), truth and background together.
    n_val = validation_split(truth.shape[0])
    val = torch.cat([truth[:n_val], background[:n_val]]).to(device)
    states = torch.stack([truth[n_val:], background[n_val:]], 1).flatten(0, 1).to(device)
    weights = model.area_weights()
    report = train_vae(vae, states, cfg, generator, progress, vae_steps, weights, val=val)
    report.update({f"recon_rmse_{var}": r for var, r in zip(model.variables, report["reconstruction_rmse"])})
    report["background_error"] = background_error_quantiles(truth, background, std, geometry)
    for p in vae.parameters():
        p.requires_grad_(False)
    z, z_b = encode_all(vae, truth.to(device)), encode_all(vae, background.to(device))
    inc = z - z_b
    denoiser.sigma_data.fill_(float(inc.std()))
    b_var = inc.var(0).clamp_min(1e-8)
    report.update(train_denoiser(denoiser, z, z_b, cfg, generator, progress, den_steps))
    report.update({"data_seconds": data_seconds, "sigma_data": float(inc.std()),
                   "train_seconds": time.perf_counter() - t0, "pairs": int(truth.shape[0])})
    prior = LatentPrior(geometry, {**cfg, "vae_steps": vae_steps, "denoiser_steps": den_steps}, vae, denoiser, b_var, report)
    return prior.eval(), digest


def finetune_prior(prior: LatentPrior, truth: torch.Tensor, background: torch.Tensor, cfg: dict, seed: int,
                   progress: bool, steps: int) -> dict:
    """Continue the denoiser's training on pairs whose backgrounds come from a cycled run."""
    generator = torch.Generator().manual_seed(seed + 1)
    for p in prior.denoiser.parameters():
        p.requires_grad_(True)
    device = prior.device
    z = encode_all(prior.vae, truth.to(device, torch.float32))
    z_b = encode_all(prior.vae, background.to(device, torch.float32))
    out = train_denoiser(prior.denoiser, z, z_b, cfg, generator, progress, steps, desc="losda finetune", lr=3e-4)
    prior.eval()
    return out
