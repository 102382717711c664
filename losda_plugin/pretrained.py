"""Trained priors committed with the project, so that users and the suites need not retrain.

A committed prior is a checkpoint from the cache (``<model>-<preset>-<config hash>.pt``, as
``checkpoint.checkpoint_path`` names it) copied into ``losda_plugin/pretrained/`` beside a JSON
file with its provenance: the command that trains it, its seed, the hash of the code that trained
it and the commit it was published from, the hash of its training data, its size and sha256.
When a run needs a prior that is not in the cache (or is stale there), it installs the committed
one instead of training, but only if that one was made by exactly the code that would train it
now (the same code version as the cache uses) and its bytes match the recorded sha256; otherwise
it trains as before. ``checkpoint.load`` then checks the configuration as for any cached prior.

Publish a prior trained by this code (``da-harness train`` writes it to the cache first):

    python -m losda_plugin.pretrained ~/.cache/da-harness/losda/sw-full-<hash>.pt
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from interfaces import cache
from interfaces.equivalence import counts_as
from interfaces.errors import DataError, UsageError

FOLDER = Path(__file__).resolve().parent / "pretrained"
#: Larger files belong in a release, not in the repository.
MAX_BYTES = 20 * 1024 * 1024


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def provenance_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".json")


def committed(name: str, folder: Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The committed prior called ``name`` and its provenance, or None."""
    path = (folder or FOLDER) / name
    meta = provenance_path(path)
    if not (path.exists() and meta.exists()):
        return None
    return path, json.loads(meta.read_text())


def usable_reason(path: Path, meta: dict[str, Any], code: str) -> str:
    """'' when the committed prior at ``path`` may stand in for training by code ``code`` (it was
    trained by that code, or by code shown to train the same weights: interfaces/equivalence.py);
    else why not."""
    if not meta.get("code_version") or not counts_as(meta["code_version"], code):
        return f"trained by other code (version {meta.get('code_version')}, this code is {code})"
    if sha256(path) != meta.get("sha256"):
        return "its bytes do not match the sha256 its provenance records"
    return ""


def install(target: Path, code: str, folder: Path | None = None) -> str:
    """Copy the committed prior named like ``target`` (a cache path) into the cache when it was
    made by code ``code``; returns a one-line note of what was done ('' when there is none)."""
    found = committed(target.name, folder)
    if found is None:
        return ""
    path, meta = found
    why = usable_reason(path, meta, code)
    if why:
        return f"losda: the committed prior {path.name} is not used: {why}"
    cache.write_atomic(target, lambda tmp: shutil.copyfile(path, tmp))
    return (f"losda: using the committed prior {path.name} (`{meta.get('command')}`, seed {meta.get('seed')}, "
            f"published at commit {meta.get('published_at_commit')}); no training needed")


def _commit() -> str:
    root = FOLDER.parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + (" (with uncommitted changes)" if dirty else "")


def train_command(cfg: dict[str, Any], model_defaults: dict[str, Any]) -> str:
    """The `da-harness train` command that retrains this configuration from scratch."""
    sets = [f"--set preset={cfg['preset']}"]
    sets += [f"--set model.{k}={v}" for k, v in sorted(cfg["model_options"].items()) if model_defaults.get(k) != v]
    return f"da-harness train --method losda --model {cfg['model']} {' '.join(sets)}"


def publish(checkpoint: Path, folder: Path | None = None) -> Path:
    """Copy a cached checkpoint trained by this code into the pretrained folder, with provenance."""
    from interfaces.registry import get_registry

    from .checkpoint import checkpoint_path, code_version_of_module
    from .config import config_hash

    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise UsageError(f"no checkpoint at {checkpoint} (train it first with `da-harness train`)")
    size = checkpoint.stat().st_size
    if size > MAX_BYTES:
        raise UsageError(f"{checkpoint} is {size / 2**20:.1f} MB; committed priors are at most {MAX_BYTES // 2**20} MB")
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg = payload["config"]
    entry = get_registry().model(cfg["model"])
    code = code_version_of_module(cfg, entry.factory.__module__)
    if payload.get("code_version") != code:
        raise DataError(f"{checkpoint} was trained by other code (version {payload.get('code_version')}, this code "
                        f"is {code}): retrain it with this code before publishing")
    if payload.get("config_hash") != config_hash(cfg):
        raise DataError(f"{checkpoint} records configuration hash {payload.get('config_hash')}, this code computes "
                        f"{config_hash(cfg)} (the way configurations are named changed): retrain it before publishing")
    if cfg.get("finetune"):
        raise UsageError(f"{checkpoint} is fine-tuned on cycled backgrounds of one observing network; "
                         "only priors trained on the model's own data are published")
    out = (folder or FOLDER)
    out.mkdir(parents=True, exist_ok=True)
    # Named as this code names the checkpoint of this configuration (a file trained before an
    # option with a neutral default existed may carry an older name for the same prior).
    target = out / checkpoint_path(out, cfg).name
    shutil.copyfile(checkpoint, target)
    report = payload.get("report", {})
    meta = {
        "file": target.name,
        "command": train_command(cfg, entry.factory.defaults),
        "seed": payload.get("seed"),
        # The checkpoint records the hash of the code that trained it, which must equal this
        # code's: the commit it was published from is one such commit.
        "code_version": code,
        "published_at_commit": _commit(),
        "config_hash": config_hash(cfg),
        "data_hash": payload.get("data_hash"),
        "sha256": sha256(target),
        "bytes": size,
        "torch": payload.get("versions", {}).get("torch"),
        "published": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "train_seconds": report.get("train_seconds"),
        "reconstruction": {k: v for k, v in report.items() if str(k).startswith("recon_rmse")},
        "config": cfg,
    }
    provenance_path(target).write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return target


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Commit a trained prior from the cache, with its provenance.")
    p.add_argument("checkpoint", nargs="+", help="cache checkpoint(s), e.g. ~/.cache/da-harness/losda/sw-full-<hash>.pt")
    args = p.parse_args(argv)
    try:
        for path in args.checkpoint:
            print(f"published {publish(Path(path).expanduser())}")
    except (UsageError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
