"""A mean forecast-bias correction estimated from reanalysis-like data (``--forecast-bias``).

In an imperfect-model twin (``--truth-set``) the forecast model M is not the truth's. A forecast
centre estimates its model's systematic error from data it holds (a reanalysis) and corrects
each forecast by it; a prior trained on reanalysis learns the same error. To give the classical
methods the data a reanalysis-trained prior gets, the user names a model of the same kind whose
states stand for the reanalysis (``--forecast-bias 'jet_speed=70;drag_days=7'``, explicitly,
as LO-SDA's ``train_data`` names its training model) and the harness estimates, over n states x
of that model's climatology (independent of every seed, never the scored truth run),

    b = mean_x [ M_data(x) - M(x) ],

the forecast model's mean one-cycle error on the data model's attractor. Every member of every
cycled forecast is then M(x) + b. A method's own preparation (training pairs, B estimation) uses
the forecast model as it is: the correction belongs to the cycling, as in an operational suite.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from . import cache
from .errors import UsageError
from .options import parse_assignments, resolve

#: States of the data model's climatology the mean is taken over, and the batch they run in.
SAMPLES = 2000
CHUNK = 500


def parse(spec: str | None, model) -> dict[str, Any] | None:
    """The data model's options that differ from the forecast model's, typed; None when off.
    ``spec`` is 'key=value;key=value' (the form of LO-SDA's train_data)."""
    if spec is None or not str(spec).strip() or str(spec).strip() == "none":
        return None
    items = [item for item in str(spec).split(";") if item.strip()]
    try:
        given = parse_assignments(items)
        typed = resolve(type(model).defaults, {**model.options, **given}, f"model '{model.name}'")
    except UsageError as exc:
        raise UsageError(f"--forecast-bias {spec!r}: {exc}") from None
    return {k: typed[k] for k in given}


def canonical(spec: str, defaults: dict[str, Any]) -> str:
    """``spec`` typed and sorted ('drag_days=7.0;jet_speed=70.0'), so that a job's hash and its
    table's name do not depend on how the user wrote it."""
    items = [item for item in str(spec).split(";") if item.strip()]
    given = parse_assignments(items)
    try:
        typed = resolve(defaults, given, "--forecast-bias")
    except UsageError as exc:
        raise UsageError(f"--forecast-bias {spec!r}: {exc}") from None
    return ";".join(f"{k}={typed[k]}" for k in sorted(given))


def estimate(model, data_model, n: int = SAMPLES) -> torch.Tensor:
    """b (state-shaped, float64): the mean of M_data(x) - M(x) over ``n`` climatological states
    of ``data_model``; cached beside the models' other data, keyed by both models' options and
    the code that computes it."""
    version = cache.code_version({type(model).__module__, type(data_model).__module__, __name__},
                                 follow=cache.PROJECT_PACKAGES)
    name = _entry_name(model, data_model, n)
    path = Path(model.cache_root()) / "forecast_bias" / f"{name}.pt"

    def read(p: Path):
        if not p.exists():
            return None, "missing"
        try:
            entry = torch.load(p, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged entry is rebuilt, and said so
            return None, f"corrupt ({type(exc).__name__})"
        if entry.get("version") != version:
            return None, f"made by other code ({entry.get('version')})"
        return entry["b"], ""

    def build() -> torch.Tensor:
        states = data_model.climatology(n).to(torch.float64)
        total = torch.zeros(states.shape[1:], dtype=torch.float64)
        for chunk in states.split(CHUNK):
            total += (data_model.forecast(chunk, None).to(torch.float64)
                      - model.forecast(chunk, None).to(torch.float64)).sum(0)
        return total / states.shape[0]

    return cache.build_once(path, read, build, lambda b, tmp: torch.save({"b": b, "version": version}, tmp),
                            f"the forecast bias of {model.summary()} on {data_model.summary()}")


def _entry_name(model, data_model, n: int) -> str:
    text = json.dumps([model.name, model.options, data_model.options, n], sort_keys=True, default=str)
    return f"{model.name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def rms_per_variable(b: torch.Tensor, model) -> dict[str, float]:
    """The area-weighted RMS of b per variable (recorded in the run file)."""
    w = model.area_weights().to(torch.float64)
    fields = b if model.has_channels else b.unsqueeze(0)
    return {name: float(((fields[i] ** 2) * w).sum() / w.sum()) ** 0.5 for i, name in enumerate(model.variables)}
