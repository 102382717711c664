"""Checkpoints of the latent prior: weights plus what produced them (configuration, training
data hash, versions). Loading refuses a corrupt file or one trained for something else, with a
one-line DataError naming the file and the mismatch."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

import interfaces
from interfaces import cache
from interfaces.equivalence import counts_as
from interfaces.errors import DataError

from .config import FORMAT, UNHASHED, config_hash
from .prior import LatentPrior, build_networks

REQUIRED = ("format", "config", "config_hash", "vae", "denoiser", "b_var", "data_hash", "versions")


def checkpoint_path(cache_dir, cfg: dict[str, Any]) -> Path:
    return Path(cache_dir) / "losda" / f"{cfg['model']}-{cfg['preset']}-{config_hash(cfg)}.pt"


def code_version(cfg: dict[str, Any], model) -> str:
    """The version of the code that determines a prior's weights: the training modules (with
    the losda_plugin modules they import) and the model's module, which makes the training
    data; with finetune=self also the methods that cycle to make its backgrounds. An edit
    elsewhere (plots, reports, guidance of an unfinetuned prior) keeps the checkpoint."""
    return code_version_of_module(cfg, type(model).__module__)


def code_version_of_module(cfg: dict[str, Any], model_module: str) -> str:
    """``code_version`` from the name of the model's module, for a prior whose model is not built."""
    modules = ["losda_plugin.training", model_module]
    if cfg.get("finetune"):
        modules.append("losda_plugin.methods")
    return cache.code_version(modules, follow=("losda_plugin", "interfaces.models"))


def stale_reason(path: Path, code: str) -> str:
    """Why the checkpoint at ``path`` must be (re)trained: 'missing', 'made by other code
    (...)', or '' when it exists and was made by this code, or by code shown to train the same
    weights (interfaces/equivalence.py), or cannot be read (``load`` then says what is wrong)."""
    path = Path(path)
    if not path.exists():
        return "missing"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - load() reports an unreadable file in one line
        return ""
    made_by = payload.get("code_version") if isinstance(payload, dict) else None
    if not made_by or not counts_as(made_by, code):
        return f"made by other code (version {made_by or 'not recorded'}, this code is {code})"
    return ""


def save(prior: LatentPrior, path: Path, data_hash: str, seed: int, code: str = "") -> Path:
    """Write the checkpoint; ``code`` is ``code_version`` of the code that trained it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "code_version": code,
        "format": FORMAT,
        "config": prior.config,
        "config_hash": config_hash(prior.config),
        # CPU copies, so a checkpoint trained on one device loads on any.
        "vae": {k: v.cpu() for k, v in prior.vae.state_dict().items()},
        "denoiser": {k: v.cpu() for k, v in prior.denoiser.state_dict().items()},
        "b_var": prior.b_var.cpu(),
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


#: What to do about a checkpoint that cannot be used: it is a cache, so rebuilding it is safe.
REMEDY = "delete it; the next run (or 'da-harness train' with the same --model and --set options) retrains it"


def _unreadable(path: Path, exc: Exception) -> str:
    """What is wrong with a file torch.load refused, judged from the file itself (torch's own
    message is long, multi-line and often blames the wrong thing)."""
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        return f"is not a torch checkpoint (it starts with {head!r}, not a zip archive's 'PK')"
    if not zipfile.is_zipfile(path):
        return f"is truncated ({size} bytes, its zip directory is missing): probably a copy or write cut short"
    if isinstance(exc, pickle.UnpicklingError):
        return "holds Python objects that a safe (weights-only) load refuses: it was not written by da-harness"
    return f"is damaged (a torch archive whose contents cannot be read: {type(exc).__name__})"


def load(path: Path, expected: dict[str, Any], geometry) -> LatentPrior:
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"checkpoint {path} does not exist; run 'da-harness train' with the same options") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user problem
        raise DataError(f"checkpoint {path} {_unreadable(path, exc)}; {REMEDY}") from None
    if not isinstance(payload, dict) or any(k not in payload for k in REQUIRED):
        missing = [k for k in REQUIRED if k not in payload] if isinstance(payload, dict) else list(REQUIRED)
        raise DataError(f"checkpoint {path} is a torch file but not a losda checkpoint (missing {', '.join(missing)}); {REMEDY}")
    if payload["format"] != FORMAT:
        raise DataError(f"checkpoint {path} has format {payload['format']}, this version reads {FORMAT}; {REMEDY}")
    stored = payload["config"]
    if config_hash(stored) != payload["config_hash"]:
        raise DataError(f"checkpoint {path} is inconsistent: its configuration does not hash to the digest it records "
                        f"({payload['config_hash']}), so it was edited or damaged; {REMEDY}")
    if payload["config_hash"] != config_hash(expected):
        raise DataError(f"checkpoint {path} was trained for another configuration: {_first_difference(stored, expected)}; {REMEDY}")
    cfg = {**expected, **{k: stored[k] for k in UNHASHED if k in stored}}
    vae_state, den_state = payload["vae"], payload["denoiser"]
    try:
        vae, denoiser = build_networks(cfg, geometry, vae_state["mean"], vae_state["std"])
        vae.load_state_dict(vae_state)
        denoiser.load_state_dict(den_state)
    except (KeyError, RuntimeError) as exc:
        what = f"missing weight {exc}" if isinstance(exc, KeyError) else "weights of the wrong names or shapes"
        raise DataError(f"checkpoint {path} has {what} for its own configuration (damaged or written by other code); {REMEDY}") from None
    b_var = payload["b_var"]
    if tuple(b_var.shape) != tuple(vae.latent_shape):
        raise DataError(f"checkpoint {path} has a latent B of shape {tuple(b_var.shape)}, expected {tuple(vae.latent_shape)}; {REMEDY}")
    report = dict(payload.get("report") or {})
    report.update(checkpoint=str(path), data_hash=payload["data_hash"], seed=payload.get("seed"), versions=payload["versions"])
    return LatentPrior(geometry, cfg, vae, denoiser, b_var, report).eval()
