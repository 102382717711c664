"""The Python API: run an experiment from a notebook or a script, as `da-harness run` does.

    from interfaces import api

    ds = api.run(model="lorenz96", method="enkf", obs="every:2", cycles=200, seed=1,
                 options={"inflation": 1.05})
    ds.analysis_rmse.plot()              # per-cycle scores, as in a run file
    json.loads(ds.attrs["summary"])      # the figures `da-harness run` prints

``run`` takes the options of `da-harness run` (underscores for dashes) and returns the run
file's ``xarray.Dataset``, built by the same function that writes the file: with ``out`` the
file on disk holds the same Dataset (up to its ``history`` time stamp). Problems raise the
exceptions the command line turns into its one-line errors: ``UsageError`` for a bad name or
option, ``DataError`` for a bad file, ``PluginError`` for a method or model that broke its
contract (all ``interfaces.errors.HarnessError``). It runs torch on one thread unless told
otherwise (more threads than free cores made cycles tens of times slower) and prints no progress
bar unless ``progress=True``.

``diagnose(path, burn_in=None)`` gives the innovation diagnostics of a full run file, as
`da-harness diagnose --json` prints them (interfaces/diagnostics.py).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .diagnostics import innovation_statistics as diagnose
from .errors import UsageError
from . import shipped
from .harness import Experiment, default_cache, run_experiment
from .options import parse_assignments, resolve, split_options
from .registry import Registry, get_registry

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

__all__ = ["diagnose", "experiment", "run"]


def _options(options: Mapping[str, Any] | Iterable[str] | None) -> dict[str, Any]:
    """A dict as given, or ['key=value', ...] as ``--set`` takes them."""
    if options is None:
        return {}
    if isinstance(options, Mapping):
        return dict(options)
    if isinstance(options, str):
        return parse_assignments([options])
    return parse_assignments(list(options))


def experiment(
    model: str = "lorenz96",
    method: str = "free",
    *,
    obs: str = "all",
    obs_std: str | float | None = None,
    cycles: int = 100,
    burn_in: int | None = None,
    members: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    options: Mapping[str, Any] | Iterable[str] | None = None,
    truth_options: Mapping[str, Any] | Iterable[str] | None = None,
    model_error: str | None = None,
    forecast_bias: str | None = None,
    truth: str | None = None,
    observations: str | None = None,
    out: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    qc_background: float = 0.0,
    checkpoint_every: int = 0,
    cache_dir: str | None = None,
    progress: bool = False,
    train_steps: int | None = None,
    registry: Registry | None = None,
) -> Experiment:
    """The Experiment `da-harness run` would build from the same options: each option goes to
    the method or the model that declares it ('model.key' or 'method.key' when both do)."""
    registry = registry or get_registry()
    if "," in method:
        raise UsageError(f"--method takes one method, got '{method}'; to compare several use "
                         f"`da-harness compare --methods {method}`")
    entry = registry.assimilator(method)
    model_entry = registry.model(model)
    routed = split_options(_options(options), {
        "method": entry.factory.defaults if isinstance(entry.factory, type) else {},
        "model": model_entry.factory.defaults,
    })
    # --truth-set: the truth model's options, typed and checked against the model's declared ones.
    given_truth = _options(truth_options)
    typed_truth = resolve(model_entry.factory.defaults, given_truth, f"the truth of model '{model}' (--truth-set)")
    return Experiment(
        truth_options={k: typed_truth[k] for k in given_truth}, model_error=model_error, forecast_bias=forecast_bias,
        model=model, method=method, obs=obs, obs_std=obs_std, cycles=cycles, burn_in=burn_in,
        members=members, seed=seed, model_options=routed["model"], method_options=routed["method"],
        device=device, out=None if out is None else str(out), resume=resume, overwrite=overwrite,
        progress=progress, cache_dir=None if cache_dir is None else str(cache_dir),
        qc_background=qc_background, checkpoint_every=checkpoint_every,
        truth_file=None if truth is None else str(truth),
        observations_file=None if observations is None else str(observations), train_steps=train_steps,
    )


def run(model: str = "lorenz96", method: str = "free", *, threads: int = 1, **settings: Any) -> "xr.Dataset":
    """Run one cycling experiment and return its run file's Dataset.

    model, method: registered names (`da-harness models`, `da-harness methods`).
    obs, obs_std: the observation network and error std (``--obs``, ``--obs-std``).
    cycles, burn_in, members, seed, device: as on the command line (burn_in defaults to the
    model's: a tenth of the cycles, on the sphere half of them up to 100; members to the method's
    preferred size).
    options: method and model options, a dict ({"inflation": 1.05, "model.forcing": 10}) or
    ``--set``-style strings (["inflation=1.05"]).
    truth_options, model_error: an imperfect-model twin (``--truth-set``, ``--model-error``): the
    truth run's model options that differ from the forecast model's (as ``options``) and its
    stochastic forcing spec (interfaces/model_error.py); methods never see either.
    forecast_bias: 'key=value;...' names a model whose states stand for reanalysis data; the
    forecast model's mean one-cycle error on them is added to every cycled forecast
    (``--forecast-bias``, interfaces/forecast_bias.py).
    truth, observations: run-format netCDF files (``--truth``, ``--observations``).
    out, resume, overwrite, checkpoint_every: write the run file as `run --out` does; an
    existing file is refused unless ``resume`` or ``overwrite``.
    qc_background: reject observations with |O-B| > K sigma (0: off).
    train_steps: override the latent methods' training steps (``--train-steps``).
    threads: torch threads for this call (restored after); progress: a bar on stderr.
    Every keyword but ``threads`` is ``experiment``'s (one list, so the two cannot drift apart).
    Raises UsageError, DataError or PluginError, as the command line reports them.
    """
    import torch

    if not isinstance(threads, int) or threads < 1:
        raise UsageError(f"threads must be a positive integer, got {threads!r}")
    unknown = sorted(set(settings) - set(_EXPERIMENT_KEYWORDS))
    if unknown:
        raise TypeError(f"run() got unknown keyword(s) {', '.join(unknown)}; valid: "
                        f"{', '.join(['threads', *_EXPERIMENT_KEYWORDS])}")
    exp = experiment(model, method, **settings)
    shipped.seed(exp.cache_dir or default_cache())  # cache entries shipped with the code
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result = run_experiment(exp, settings.get("registry"))
    finally:
        torch.set_num_threads(before)
    return result.dataset()


# run() takes experiment()'s keywords plus ``threads``: show the whole list to help() and IDEs.
_EXPERIMENT_KEYWORDS = [n for n, p in inspect.signature(experiment).parameters.items() if p.kind is p.KEYWORD_ONLY]
run.__signature__ = inspect.signature(experiment).replace(parameters=[
    *inspect.signature(experiment).parameters.values(),
    inspect.Parameter("threads", inspect.Parameter.KEYWORD_ONLY, default=1, annotation=int),
], return_annotation="xr.Dataset")
