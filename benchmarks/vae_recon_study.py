"""VAE-only reconstruction study on the sphere (issue 14 item 1): train one VAE configuration on
climatological states for a fixed number of steps and print its validation reconstruction RMSE
per variable (physical units, area-weighted) on held-out states, with the wall time and the
process's CPU time (on a shared machine, the CPU time is the figure that says what a quiet one
would take with one thread).

The VAE alone, without the diffusion prior and without making pairs: the reconstruction error is
a property of the autoencoder and the states it sees, and the climatology is cached.

    DA_HARNESS_THREADS=1 python benchmarks/vae_recon_study.py --widths 16,32 --latent 8 --steps 300
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from interfaces.models.sw import ShallowWater
from losda_plugin.config import PRESETS
from losda_plugin.geometry import Geometry
from losda_plugin.training import normalisation, reconstruction_rmse, train_vae
from losda_plugin.vae import VAE


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--widths", default="16,32")
    p.add_argument("--latent", type=int, default=8)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--kl", type=float, default=1e-4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--decoder", default="plain", help="plain | residual (the vae_decoder option)")
    p.add_argument("--resolution", default="32x64")
    p.add_argument("--val", type=int, default=200, help="held-out states at the end of the climatology")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = ShallowWater(resolution=args.resolution)
    clim = model.climatology(2000).to(torch.float64)
    train, val = clim[: -args.val].to(torch.float32), clim[-args.val:].to(torch.float32)
    geometry = Geometry.of(model)
    mean, std = normalisation(clim[: -args.val], geometry)
    widths = [int(w) for w in args.widths.split(",")]
    torch.manual_seed(0)
    vae = VAE(geometry, widths, args.latent, mean, std, decoder=args.decoder)
    cfg = {**PRESETS[("sphere", "full")], "vae_batch": args.batch, "kl_weight": args.kl, "vae_lr": args.lr}
    t0, c0 = time.perf_counter(), time.process_time()
    report = train_vae(vae, train, cfg, torch.Generator().manual_seed(0), False, args.steps, model.area_weights(),
                       val=val)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    rmse = reconstruction_rmse(vae, val, model.area_weights(), geometry)
    latent = 1
    for s in vae.latent_shape:
        latent *= s
    print(json.dumps({"widths": args.widths, "latent_channels": args.latent, "latent_size": latent,
                      "decoder": args.decoder, "steps": args.steps, "batch": args.batch, "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
                      "recon_h": round(rmse[0], 3), "recon_u": round(rmse[1], 4), "recon_v": round(rmse[2], 4),
                      "val_loss": report["val_loss"]}))


if __name__ == "__main__":
    main()
