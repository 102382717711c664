"""Training configuration: presets per geometry, the options shared by the three methods, and
the hash that names a checkpoint.

The three methods (losda, dps, l3dvar) declare the same training options with the same
defaults, so they resolve to the same configuration and share one trained prior.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from interfaces.errors import UsageError

from .vae import DECODERS

#: Bump when the checkpoint layout or the meaning of a setting changes.
FORMAT = 1

#: Options every latent method accepts; 0 / "" mean "take the preset's value".
TRAIN_DEFAULTS: dict[str, Any] = {
    "preset": "full",  # full | quick (a minute or two of training, for smoke comparisons) | strong (sphere only)
    "latent_channels": 0,
    "vae_widths": "",  # comma-separated channel widths per level, e.g. "16,32,64"
    "vae_decoder": "",  # plain | residual (a linear path beside the convolutions)
    "kl_weight": 0.0,
    "vae_steps": 0,
    "denoiser_width": 0,
    "denoiser_blocks": 0,
    "denoiser_steps": 0,
    "pairs": 0,  # (truth, background) training pairs
    # Each pair's initial background error (RMS, in climatological std units) is log-uniform in
    # [error_min, error_max]: from below a tuned LETKF's (~0.04 on sw 32x64 at 5 %) to a free
    # run's (sqrt 2: an unrelated state). See losda_plugin/training.py.
    "error_min": 0.02,
    "error_max": 1.414,
    # The model whose climatology trains the prior: "" the forecast model (the default), or
    # model options 'key=value;key=value' that differ from it, e.g. the truth model of an
    # imperfect-model twin: the analogue of training on reanalysis of the real atmosphere,
    # which the forecast model does not know. Explicit, recorded in the checkpoint and run file.
    "train_data": "",
    # Where the backgrounds of the training pairs come from: "" the same model as the truths;
    # "forecast": the forecast model's forecasts from (perturbed) states of the train_data model,
    # so that the pairs carry the forecast model's systematic one-cycle error, as a reanalysis
    # paired with an operational model's forecasts does.
    "train_backgrounds": "",
    "finetune": "",  # "" off; "self": backgrounds from a cycled run of this method
    "finetune_cycles": 0,
    "finetune_steps": 0,
}

# Measured choices (see benchmarks/results/losda_*.md): the latent keeps enough dimensions
# for the attractor (Lorenz-96's is about 27). On Lorenz-96 a halved grid (2 x 20 latent)
# reconstructed to only 0.13-0.27 in a few minutes; a full-length 1 x 40 latent reaches 0.01-0.02.
PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    ("ring", "full"): {
        "latent_channels": 1, "vae_widths": "32", "vae_steps": 2500, "vae_batch": 128, "kl_weight": 1e-4, "vae_decoder": "plain",
        "denoiser_width": 32, "denoiser_blocks": 4, "denoiser_steps": 3000, "denoiser_batch": 128,
        "pairs": 20000, "finetune_cycles": 2000, "finetune_steps": 1500,
    },
    ("ring", "quick"): {
        "latent_channels": 1, "vae_widths": "32", "vae_steps": 800, "vae_batch": 128, "kl_weight": 1e-4, "vae_decoder": "plain",
        "denoiser_width": 32, "denoiser_blocks": 3, "denoiser_steps": 1000, "denoiser_batch": 128,
        "pairs": 8000, "finetune_cycles": 300, "finetune_steps": 300,
    },
    # The sphere's latent is a 16 x 32 grid of 8 channels (4096 numbers for 6144): full-resolution
    # convolutions dominate the cost, so the encoder halves the grid once, early.
    ("sphere", "full"): {
        "latent_channels": 8, "vae_widths": "16,32", "vae_steps": 1500, "vae_batch": 16, "kl_weight": 1e-4, "vae_decoder": "plain",
        "denoiser_width": 32, "denoiser_blocks": 3, "denoiser_steps": 1500, "denoiser_batch": 16,
        "pairs": 1000, "finetune_cycles": 100, "finetune_steps": 300,
    },
    # A latent that is not the bottleneck (issue 14; benchmarks/results/vae_recon.md): no halving
    # (4 channels on the model's grid), a decoder with a linear path beside the convolutions, a
    # weak KL term. At 400 VAE steps it already reconstructs better (h 14.2 m, u 0.80, v 0.89)
    # than the full preset at 1,500 (h 15.6 m); at 3,000 h 3.9 m, u and v 0.19 (target: 6, 0.37).
    # Sized for well under an hour on a quiet 2-core machine (an estimate from CPU times under
    # load, not a measured full run); on a GPU, minutes.
    ("sphere", "strong"): {
        "latent_channels": 4, "vae_widths": "32", "vae_steps": 8000, "vae_batch": 16, "kl_weight": 1e-6,
        "vae_decoder": "residual",
        "denoiser_width": 32, "denoiser_blocks": 4, "denoiser_steps": 6000, "denoiser_batch": 16,
        "pairs": 3000, "finetune_cycles": 100, "finetune_steps": 300,
    },
    ("sphere", "quick"): {
        "latent_channels": 8, "vae_widths": "8,16", "vae_steps": 250, "vae_batch": 16, "kl_weight": 1e-4, "vae_decoder": "plain",
        "denoiser_width": 24, "denoiser_blocks": 2, "denoiser_steps": 300, "denoiser_batch": 16,
        "pairs": 300, "finetune_cycles": 30, "finetune_steps": 60,
    },
}


def resolve_config(options: dict[str, Any], model, geometry, operator=None) -> dict[str, Any]:
    """The full training configuration: the preset filled in by explicit options."""
    preset = options["preset"]
    if (geometry.kind, preset) not in PRESETS:
        valid = sorted(p for kind, p in PRESETS if kind == geometry.kind)
        raise UsageError(f"unknown preset '{preset}' for model '{model.name}'; valid presets: {', '.join(valid)}")
    cfg: dict[str, Any] = dict(PRESETS[(geometry.kind, preset)])
    for key in TRAIN_DEFAULTS:
        value = options[key]
        if key in cfg and value in (0, ""):
            continue
        cfg[key] = value
    try:
        cfg["vae_widths"] = [int(w) for w in str(cfg["vae_widths"]).split(",")]
    except ValueError:
        raise UsageError(f"option 'vae_widths' needs comma-separated integers, got '{cfg['vae_widths']}'") from None
    if cfg["vae_decoder"] not in DECODERS:
        raise UsageError(f"option 'vae_decoder' must be one of {', '.join(DECODERS)}, got '{cfg['vae_decoder']}'")
    if not 0 < cfg["error_min"] <= cfg["error_max"] <= 2:
        raise UsageError(f"options 'error_min' and 'error_max' need 0 < error_min <= error_max <= 2 "
                         f"(climatological std units), got {cfg['error_min']} and {cfg['error_max']}")
    if cfg["finetune"] not in ("", "self"):
        raise UsageError(f"option 'finetune' must be '' or 'self', got '{cfg['finetune']}'")
    cfg.update({
        "format": FORMAT,
        "model": model.name,
        "model_options": {k: model.options[k] for k in sorted(model.options)},
        "state_shape": list(model.state_shape),
        "geometry": geometry.kind,
    })
    # Cycled backgrounds depend on the observing network, so only then is it part of the prior.
    if cfg["finetune"] and operator is not None:
        cfg["finetune_obs"] = operator.spec
        cfg["finetune_obs_std"] = [round(float(s), 8) for s in operator.std.unique()]
    return cfg


#: Settings that change how long training runs, not what is learned: left out of the name.
UNHASHED = ("vae_steps", "denoiser_steps", "finetune_steps")


#: Options added after checkpoints existed, with the value that means "as before": left out of
#: the hash at that value, so adding an option does not orphan every trained prior.
NEUTRAL = {"train_data": "", "train_backgrounds": ""}


def config_hash(cfg: dict[str, Any]) -> str:
    keyed = {k: v for k, v in cfg.items() if k not in UNHASHED and not (k in NEUTRAL and v == NEUTRAL[k])}
    text = json.dumps(keyed, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
