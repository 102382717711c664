"""Training data and loops: (truth, background) pairs, then the VAE, then the conditional
denoiser on the latent increment z_truth - z_background.

A background is a one-cycle forecast of a perturbed earlier truth. Perturbations are scaled
differences of two climatological states (so they have the climatology's spatial structure,
not white noise that a smooth model would never produce), with a size drawn per pair
log-uniformly around ``perturb``: a prior trained on one error size only is over-confident when
cycled backgrounds turn out worse.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time

import torch
from tqdm import tqdm

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


def perturbations(climatology: torch.Tensor, n: int, perturb: float, spread: float, generator) -> torch.Tensor:
    i = torch.randint(0, climatology.shape[0], (n,), generator=generator)
    j = torch.randint(0, climatology.shape[0], (n,), generator=generator)
    size = perturb * torch.exp(math.log(spread) * (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1))
    diff = (climatology[i] - climatology[j]) / math.sqrt(2.0)
    return diff * size.view(-1, *([1] * (climatology.dim() - 1)))


def make_pairs(model, climatology: torch.Tensor, n_pairs: int, perturb: float, spread: float,
               generator: torch.Generator, progress: bool = False, chunk: int = 2000):
    """(truth, background) pairs along short trajectories started from climatological states."""
    n_start = min(climatology.shape[0], n_pairs, chunk)
    x = climatology[torch.randperm(climatology.shape[0], generator=generator)[:n_start]].clone()
    truths, backgrounds, made = [], [], 0
    steps = -(-n_pairs // n_start)
    for _ in _bar(steps, "losda data", progress):
        delta = perturbations(climatology, x.shape[0], perturb, spread, generator)
        both = model.forecast(torch.cat([x, x + delta]), generator)
        truth, background = both[: x.shape[0]], both[x.shape[0]:]
        truths.append(truth)
        backgrounds.append(background)
        made += truth.shape[0]
        x = truth
    truth = torch.cat(truths)[:n_pairs].to(torch.float32)
    background = torch.cat(backgrounds)[:n_pairs].to(torch.float32)
    return truth, background


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


def train_vae(vae, states: torch.Tensor, cfg: dict, generator, progress: bool, steps: int, weights) -> dict:
    n_val = max(1, states.shape[0] // 10)
    val, train = states[:n_val], states[n_val:]
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    batch = min(cfg["vae_batch"], train.shape[0])
    bar = _bar(steps, "losda VAE", progress)
    t0 = time.perf_counter()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, 2e-3)
        idx = torch.randint(0, train.shape[0], (batch,), generator=generator).to(train.device)
        rec, kl = vae.elbo_terms(train[idx], generator)
        loss = rec + cfg["kl_weight"] * kl
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress and step % 100 == 0:
            bar.set_postfix(rec=f"{rec.item():.2e}", kl=f"{kl.item():.2f}")
    vae.eval()
    with torch.no_grad():
        val_rec, val_kl = vae.elbo_terms(val[:512], torch.Generator().manual_seed(0))
        # Scale latents to unit std per channel so noise levels mean the same on every testbed.
        mean, _ = vae.encode_stats(train[:2000])
        dims = [0, *range(2, mean.dim())]
        vae.latent_scale.copy_(mean.std(dim=dims).clamp_min(1e-6))
    rmse = reconstruction_rmse(vae, val, weights, vae.geometry)
    report = {"vae_seconds": time.perf_counter() - t0, "vae_val_rec": float(val_rec), "vae_val_kl": float(val_kl),
              "reconstruction_rmse": rmse}
    if progress:
        print(f"losda: VAE trained in {report['vae_seconds']:.0f}s; validation reconstruction RMSE per variable: "
              + ", ".join(f"{r:.4g}" for r in rmse), file=sys.stderr)
    return report


def encode_all(vae, states: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([vae.encode(p) for p in states.split(256)])


def train_denoiser(denoiser, z: torch.Tensor, z_b: torch.Tensor, cfg: dict, generator, progress: bool,
                   steps: int, desc: str = "losda denoiser", lr: float = 1e-3) -> dict:
    n_val = max(1, z.shape[0] // 10)
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
        if progress and step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    denoiser.eval()
    with torch.no_grad():
        val = float(loss_of(z[:n_val][:1024], z_b[:n_val][:1024], torch.Generator().manual_seed(0)))
    seconds = time.perf_counter() - t0
    if progress:
        print(f"losda: {desc} trained in {seconds:.0f}s; validation loss {val:.4f} (1.0 = predicting z_b)", file=sys.stderr)
    return {f"{desc.split()[-1]}_seconds": seconds, f"{desc.split()[-1]}_val_loss": val}


def train_prior(model, climatology: torch.Tensor, cfg: dict, seed: int, progress: bool = False,
                steps: int | None = None, device: torch.device | str = "cpu") -> tuple[LatentPrior, str]:
    """Train the VAE then the denoiser from scratch on ``device``; returns the prior and the
    data hash. The training pairs come from the model's forecasts on the CPU; the weights are
    initialised on the CPU from the seed, so every device starts from the same networks."""
    geometry = Geometry.of(model)
    generator = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    truth, background = make_pairs(model, climatology, cfg["pairs"], cfg["perturb"], cfg["perturb_range"],
                                   generator, progress)
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
    # The VAE learns truths and backgrounds alike: both are model states.
    states = torch.stack([truth, background], 1).flatten(0, 1).to(device)
    weights = model.area_weights()
    report = train_vae(vae, states, cfg, generator, progress, vae_steps, weights)
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
