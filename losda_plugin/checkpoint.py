"""Checkpoints of the latent prior: weights plus what produced them (configuration, training
data hash, versions). Loading refuses a corrupt file or one trained for something else, with a
one-line DataError naming the file and the mismatch."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

import interfaces
from interfaces.errors import DataError

from .config import FORMAT, UNHASHED, config_hash
from .prior import LatentPrior, build_networks

REQUIRED = ("format", "config", "config_hash", "vae", "denoiser", "b_var", "data_hash", "versions")


def checkpoint_path(cache_dir, cfg: dict[str, Any]) -> Path:
    return Path(cache_dir) / "losda" / f"{cfg['model']}-{cfg['preset']}-{config_hash(cfg)}.pt"


def save(prior: LatentPrior, path: Path, data_hash: str, seed: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "config": prior.config,
        "config_hash": config_hash(prior.config),
        "vae": prior.vae.state_dict(),
        "denoiser": prior.denoiser.state_dict(),
        "b_var": prior.b_var,
        "data_hash": data_hash,
        "seed": seed,
        "report": prior.report,
        "versions": {"torch": str(torch.__version__), "da_harness": interfaces.__version__},
    }
    # Write then rename, so a killed training never leaves half a checkpoint under the real name.
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _first_difference(stored: dict, expected: dict) -> str:
    for key in sorted(set(stored) | set(expected)):
        if key in UNHASHED:
            continue
        if stored.get(key) != expected.get(key):
            return f"{key} is {stored.get(key)!r}, expected {expected.get(key)!r}"
    return "configuration hash differs"


def load(path: Path, expected: dict[str, Any], geometry) -> LatentPrior:
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        reason = re.sub(r"\x1b\[[0-9;]*m", "", lines[0] if lines else type(exc).__name__).strip()[:100]
        raise DataError(f"checkpoint {path} is corrupt or unreadable ({reason}); delete it or retrain with 'da-harness train'") from None
    if not isinstance(payload, dict) or any(k not in payload for k in REQUIRED):
        raise DataError(f"checkpoint {path} is not a losda checkpoint (missing fields); delete it or retrain")
    if payload["format"] != FORMAT:
        raise DataError(f"checkpoint {path} has format {payload['format']}, this version reads {FORMAT}; retrain with 'da-harness train'")
    stored = payload["config"]
    if payload["config_hash"] != config_hash(expected) or config_hash(stored) != payload["config_hash"]:
        raise DataError(f"checkpoint {path} does not match this configuration: {_first_difference(stored, expected)}")
    cfg = {**expected, **{k: stored[k] for k in UNHASHED if k in stored}}
    vae_state, den_state = payload["vae"], payload["denoiser"]
    try:
        vae, denoiser = build_networks(cfg, geometry, vae_state["mean"], vae_state["std"])
        vae.load_state_dict(vae_state)
        denoiser.load_state_dict(den_state)
    except (KeyError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise DataError(f"checkpoint {path} has weights that do not fit its configuration ({reason[:120]})") from None
    b_var = payload["b_var"]
    if tuple(b_var.shape) != tuple(vae.latent_shape):
        raise DataError(f"checkpoint {path} has a latent B of shape {tuple(b_var.shape)}, expected {tuple(vae.latent_shape)}")
    report = dict(payload.get("report") or {})
    report.update(checkpoint=str(path), data_hash=payload["data_hash"], seed=payload.get("seed"), versions=payload["versions"])
    return LatentPrior(geometry, cfg, vae, denoiser, b_var, report).eval()
