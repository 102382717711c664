"""The cycling loop. The harness owns the truth run, the observations and the forecasts, so
every method sees exactly the same data for a given seed; a method owns only its analysis.

One cycle k (k = 0 .. cycles-1) forecasts the analysis ensemble valid at time k to time k+1,
assimilates the observations of time k+1 and records the result.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__, io, metrics
from .assimilator import Assimilator, Context
from .errors import HarnessError, PluginError, UsageError
from .observations import QC_BACKGROUND, QC_USED, Observations, build_operator
from .options import resolve
from .registry import Registry, get_registry, instantiate_method

def default_cache() -> Path:
    """The cache directory: $DA_HARNESS_CACHE, else ~/.cache/da-harness."""
    return Path(os.environ.get("DA_HARNESS_CACHE") or Path.home() / ".cache" / "da-harness")

CLIMATOLOGY_SIZE = 2000
#: Experiment settings a method's Context never holds: each would let it regenerate the truth.
HIDDEN_FROM_METHODS = ("seed", "truth_file", "observations_file")


@dataclass
class Experiment:
    """What to run. Option dicts hold ``--set`` values (strings or typed)."""

    model: str = "lorenz96"
    method: str = "free"
    obs: str = "all"
    obs_std: str | float | None = None
    cycles: int = 100
    burn_in: int | None = None  # default: a tenth of the cycles
    members: int | None = None  # default: the method's preferred size, else 20
    seed: int = 0
    model_options: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    out: str | None = None
    resume: bool = False
    progress: bool = False
    cache_dir: str | None = None
    qc_background: float = 0.0  # reject |O-B| > k * sqrt(R + HBH^T); 0 switches it off
    checkpoint_every: int = 0  # write the run file every N cycles (0: every 60 s and at the end)
    truth_file: str | None = None
    observations_file: str | None = None
    train_steps: int | None = None

    def settings(self) -> dict[str, Any]:
        """What defines the experiment's numbers (stored in the run file, checked on resume)."""
        return {
            "model": self.model, "method": self.method, "obs": self.obs,
            "obs_std": "" if self.obs_std is None else str(self.obs_std),
            "cycles": self.cycles, "burn_in": self.burn_in, "members": self.members, "seed": self.seed,
            "model_options": dict(self.model_options), "method_options": dict(self.method_options),
            "qc_background": self.qc_background,
            "truth_file": self.truth_file or "", "observations_file": self.observations_file or "",
        }


def _stream(seed: int, name: str) -> torch.Generator:
    """An independent, reproducible random stream per purpose (truth, obs noise, method...).

    Private to the harness: a method gets only its own stream and never the seed, so it cannot
    draw the truth's or the observation noise's stream."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


@dataclass
class Setup:
    """The fixed ingredients of an experiment: everything but the cycling."""

    experiment: Experiment
    model: Any
    method: Assimilator
    operator: Any
    truth: torch.Tensor  # (cycles + 1, *state_shape); index 0 is the initial time
    obs_values: torch.Tensor  # (cycles, n_obs), for times 1..cycles
    obs_std: torch.Tensor  # (n_obs,)
    obs_qc: torch.Tensor  # (cycles, n_obs) int8
    climatology: torch.Tensor
    members: int
    context: Context
    registry: Registry


def _check_counts(exp: Experiment) -> None:
    if exp.cycles < 1:
        raise UsageError(f"--cycles must be a positive integer, got {exp.cycles}")
    if exp.members is not None and exp.members < 1:
        raise UsageError(f"--members must be a positive integer, got {exp.members}")
    if exp.burn_in is not None and not 0 <= exp.burn_in < exp.cycles:
        raise UsageError(f"--burn-in must be in [0, cycles), got {exp.burn_in} with {exp.cycles} cycles")
    if exp.qc_background < 0:
        raise UsageError(f"qc_background must be >= 0, got {exp.qc_background}")
    if exp.checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0, got {exp.checkpoint_every}")


def build_model(registry: Registry, name: str, options: dict, cache_dir: Path):
    entry = registry.model(name)
    resolved = resolve(entry.factory.defaults, options, f"model '{name}'")
    try:
        model = entry.factory(**resolved)
    except HarnessError:
        raise
    except (ValueError, TypeError) as exc:
        raise UsageError(f"model '{name}' rejected its options: {exc}") from exc
    model.cache_dir = cache_dir
    return model


def setup(exp: Experiment, registry: Registry | None = None) -> Setup:
    """Build the model, truth, observations and method; call the method's ``prepare``."""
    registry = registry or get_registry()
    _check_counts(exp)
    if exp.burn_in is None:
        exp.burn_in = exp.cycles // 10
    cache_dir = Path(exp.cache_dir) if exp.cache_dir else default_cache()
    if exp.device != "cpu" and not (exp.device.startswith("cuda") and torch.cuda.is_available()):
        raise UsageError(f"--device {exp.device} is not available here; valid devices: cpu" + (", cuda" if torch.cuda.is_available() else ""))

    model = build_model(registry, exp.model, exp.model_options, cache_dir)
    model.progress = exp.progress  # spin-up and climatology bars (interfaces/cache.py)
    method = instantiate_method(registry, exp.method, exp.method_options, model=exp.model)
    entry = registry.assimilator(exp.method)
    members = exp.members or getattr(entry.factory, "preferred_members", None) or 20
    climatology = model.climatology(CLIMATOLOGY_SIZE).to(torch.float64)

    if exp.observations_file and ((exp.obs or "all") != "all" or exp.obs_std not in (None, "")):
        raise UsageError("--obs and --obs-std describe generated observations; they cannot be combined with --observations")
    # Both files are read together: their time stamps decide which truth each observation
    # observes (io.TIME_RULE), so a run file given as both cannot be paired one cycle off.
    truth, observed = io.load_inputs(exp.truth_file, exp.observations_file, model, exp.cycles, registry)
    if truth is None:
        truth = model.truth_run(exp.cycles, _stream(exp.seed, "truth")).to(torch.float64)

    if observed is not None:
        operator, obs_values, obs_std, obs_qc = observed
        if not torch.isfinite(obs_values).any():
            print(f"da-harness: warning: observations file '{exp.observations_file}' holds no finite value in "
                  f"its {exp.cycles} cycles: every analysis is the background (a free run)", file=sys.stderr)
    else:
        operator = build_operator(exp.obs, model, _stream(exp.seed, "network"), exp.obs_std,
                                  registry.kinds(), climatology)
        clean = operator(truth[1:])
        noise = torch.randn(clean.shape, generator=_stream(exp.seed, "obs-noise"), dtype=torch.float64)
        obs_std = operator.std.clone()
        obs_values = clean + noise * obs_std
        obs_qc = torch.zeros(obs_values.shape, dtype=torch.int8)
        obs_qc[~torch.isfinite(obs_values)] = 1

    # What reproduces the truth or the observation noise (the seed, the input files) stays here.
    settings = {k: v for k, v in exp.settings().items() if k not in HIDDEN_FROM_METHODS}
    context = Context(
        model=model, operator=operator, climatology=climatology, members=members,
        settings={**settings, "members": members, "train_steps": exp.train_steps},
        cache_dir=cache_dir, generator=_stream(exp.seed, "method"),
        device=torch.device(exp.device), progress=exp.progress,
        method_seed=int(torch.randint(0, 2**62, (1,), generator=_stream(exp.seed, "method-seed"))),
    )
    return Setup(exp, model, method, operator, truth, obs_values, obs_std, obs_qc, climatology,
                 members, context, registry)


class Recorder:
    """Per-cycle records in memory; written to the run file by interfaces.io."""

    def __init__(self, s: Setup):
        n, shape = s.experiment.cycles, s.model.state_shape
        self.cycles = n
        self.background = np.full((n, *shape), np.nan)
        self.analysis = np.full((n, *shape), np.nan)
        self.ensemble = s.members > 1
        self.background_spread = np.full((n, *shape), np.nan) if self.ensemble else None
        self.analysis_spread = np.full((n, *shape), np.nan) if self.ensemble else None
        self.obs_qc = s.obs_qc.numpy().copy()
        self.scalars: dict[str, np.ndarray] = {}
        self.completed = 0
        self.weights = s.model.area_weights().to(torch.float64)
        self.has_channels = s.model.has_channels
        self.variables = s.model.variables

    def scalar(self, name: str, k: int, value: float) -> None:
        if name not in self.scalars:
            self.scalars[name] = np.full(self.cycles, np.nan)
        self.scalars[name][k] = value

    def record(self, k, truth, background, analysis, obs_values, used, operator_used, diagnostics, seconds):
        xb, xa = background.mean(0), analysis.mean(0)
        self.background[k] = xb.numpy()
        self.analysis[k] = xa.numpy()
        if self.ensemble:
            self.background_spread[k] = background.std(0).numpy()
            self.analysis_spread[k] = analysis.std(0).numpy()
            crps = metrics.crps_fair(analysis, truth, self.weights, self.has_channels)
            spread = metrics.spread(analysis, self.weights, self.has_channels)
            for v, name in enumerate(self.variables):
                self.scalar(self._name("analysis_crps", name), k, float(crps[v]))
                # Not "analysis_spread": that name is the (time, space) spread field in the run file.
                self.scalar(self._name("ensemble_spread", name), k, float(spread[v]))
        y = obs_values[used]
        if y.numel():
            both = operator_used(torch.stack([xb, xa]))
            self.scalar("omb_rms", k, metrics.departures_rms(y, both[0]))
            self.scalar("oma_rms", k, metrics.departures_rms(y, both[1]))
        self.scalar("obs_used", k, float(y.numel()))
        self.scalar("seconds", k, seconds)
        for name, value in diagnostics.items():
            self.scalar(f"diag_{name}", k, float(value))
        self.completed = k + 1

    def _name(self, base: str, var: str) -> str:
        return f"{base}_{var}" if self.has_channels else base


def _check_analysis(analysis, background, method: str, plugin: str) -> torch.Tensor:
    if not isinstance(analysis, torch.Tensor):
        raise PluginError(f"method '{method}' (plugin '{plugin}') returned {type(analysis).__name__}, not a torch.Tensor")
    if analysis.shape != background.shape:
        raise PluginError(f"method '{method}' (plugin '{plugin}') returned shape {tuple(analysis.shape)}, expected {tuple(background.shape)}")
    if analysis.device.type != "cpu":
        raise PluginError(f"method '{method}' (plugin '{plugin}') returned its analysis on {analysis.device}; "
                          "the harness expects it on the CPU (interfaces.device.to_cpu)")
    # Contiguous: a resumed run reads the ensemble back contiguous, and the memory layout can
    # change the rounding of reductions (forecast, ensemble mean), so keep the same one.
    analysis = analysis.detach().to(torch.float64).contiguous()
    if not torch.isfinite(analysis).all():
        raise PluginError(f"method '{method}' (plugin '{plugin}') returned non-finite values")
    return analysis


def background_check(obs: Observations, background: torch.Tensor, operator, k: float) -> None:
    """Flag values whose O-B exceeds k times its expected std (in place)."""
    hx = operator(background)
    var_b = hx.var(0) if background.shape[0] > 1 else torch.zeros(hx.shape[1], dtype=hx.dtype)
    bad = (obs.values - hx.mean(0)).abs() > k * (obs.std ** 2 + var_b).sqrt()
    obs.qc[bad & (obs.qc == QC_USED)] = QC_BACKGROUND


def analyse(method: Assimilator, background, obs: Observations, operator, all_used: bool = False):
    """One analysis with only the QC-passed observations. Returns (analysis, used mask or
    slice, operator restricted to them); with none usable the analysis is the background."""
    if all_used:
        used, op, obs_used = slice(None), operator, obs
    else:
        used = obs.used
        op, obs_used = operator.subset(used), obs.select(used)
    if len(obs_used) == 0:
        return background.clone(), used, op
    return method.assimilate(background, obs_used, op), used, op


@dataclass
class RunResult:
    summary: dict[str, Any]
    recorder: Recorder
    setup: Setup


def run_experiment(exp: Experiment, registry: Registry | None = None) -> RunResult:
    """Set up, prepare the method, cycle, and summarise (writing ``exp.out`` if given)."""
    wall0 = time.perf_counter()
    s = setup(exp, registry)
    entry = s.registry.assimilator(exp.method)
    rec = Recorder(s)
    forecast_gen = _stream(exp.seed, "model-noise")
    ensemble = None
    start = 0
    out = Path(exp.out) if exp.out else None
    if exp.resume:
        if out is None:
            raise UsageError("--resume needs --out FILE (the run file to continue)")
        if out.exists():
            state = io.load_resume(out, s, rec)
            start, ensemble = state["completed"], state["ensemble"]
            forecast_gen.set_state(state["forecast_rng"])
            method_state = state["method_state"]

    t0 = time.perf_counter()
    try:
        s.method.prepare(s.context)
    except HarnessError:
        raise
    except Exception as exc:
        raise PluginError(f"method '{exp.method}' (plugin '{entry.plugin}') failed in prepare: {type(exc).__name__}: {exc}") from exc
    prepare_seconds = time.perf_counter() - t0
    if exp.resume and start > 0:
        # After prepare: prepare may draw from the method's stream (e.g. 3D-Var's NMC B), and
        # those draws must not advance the stream the interrupted run had reached.
        s.context.generator.set_state(state["method_rng"])
        s.method.load_state_dict(method_state)
    if ensemble is None:
        pick = torch.randint(0, s.climatology.shape[0], (s.members,), generator=_stream(exp.seed, "init"))
        ensemble = s.climatology[pick].clone()

    bar = _progress(exp, start)
    last_write = time.perf_counter()
    loop0 = time.perf_counter()
    all_used = bool((s.obs_qc == QC_USED).all()) and exp.qc_background == 0
    for k in range(start, exp.cycles):
        c0 = time.perf_counter()
        # Model noise (if the model has any) goes to ensemble members; a one-member run is a
        # deterministic method, whose forecast is the mean (interfaces/models/linear.py).
        background = s.model.forecast(ensemble, forecast_gen if s.members > 1 else None)
        obs = Observations.from_values(s.obs_values[k], s.obs_std, s.obs_qc[k])
        if exp.qc_background > 0:
            background_check(obs, background, s.operator, exp.qc_background)
        try:
            analysis, used, op = analyse(s.method, background, obs, s.operator, all_used)
        except HarnessError:
            raise
        except Exception as exc:
            raise PluginError(f"method '{exp.method}' (plugin '{entry.plugin}') failed at cycle {k}: {type(exc).__name__}: {exc}") from exc
        ensemble = _check_analysis(analysis, background, exp.method, entry.plugin)
        rec.obs_qc[k] = obs.qc.numpy()
        rec.record(k, s.truth[k + 1], background, ensemble, obs.values, used, op, s.method.diagnostics(),
                   time.perf_counter() - c0)
        if bar is not None:
            bar.update(1)
        due = exp.checkpoint_every and (k + 1) % exp.checkpoint_every == 0
        if out is not None and (due or time.perf_counter() - last_write > 60.0) and k + 1 < exp.cycles:
            io.write_run(out, s, rec, _resume_state(ensemble, forecast_gen, s))
            last_write = time.perf_counter()
    loop_seconds = time.perf_counter() - loop0
    if bar is not None:
        bar.close()
    summary = summarise(s, rec, prepare_seconds, loop_seconds, start)
    summary["total_seconds"] = time.perf_counter() - wall0
    if out is not None:
        summary["out"] = str(out)
        io.write_run(out, s, rec, _resume_state(ensemble, forecast_gen, s), summary)
    return RunResult(summary, rec, s)


def _resume_state(ensemble, forecast_gen, s: Setup) -> dict[str, Any]:
    return {
        "ensemble": ensemble.numpy().copy(),
        "forecast_rng": forecast_gen.get_state().numpy().copy(),
        "method_rng": s.context.generator.get_state().numpy().copy(),
        "method_state": pickle.dumps(s.method.state_dict()),
    }


def _progress(exp: Experiment, start: int):
    if not exp.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=exp.cycles, initial=start, desc=f"{exp.method} on {exp.model}", unit="cycle",
                file=sys.stderr, leave=False, disable=None)


def summarise(s: Setup, rec: Recorder, prepare_seconds: float, loop_seconds: float, start: int = 0) -> dict[str, Any]:
    """Scores over the cycles after burn-in."""
    exp, model = s.experiment, s.model
    keep = slice(exp.burn_in, rec.completed)
    truth = s.truth[1:][keep]
    weights = rec.weights
    scale = s.climatology.std(0)
    scale = metrics.per_variable(scale ** 2, weights, model.has_channels).sqrt()
    per_var = {}
    for role, arr in (("analysis", rec.analysis), ("background", rec.background)):
        err = metrics.rmse(torch.from_numpy(arr[keep]), truth, weights, model.has_channels)  # (T, C)
        per_var[role] = err
    summary: dict[str, Any] = {
        "method": exp.method, "model": exp.model, "seed": exp.seed, "obs": exp.obs,
        "cycles": exp.cycles, "burn_in": exp.burn_in, "members": s.members,
        "n_obs": s.operator.n_obs,
    }
    for role, err in per_var.items():
        summary[f"{role}_rmse"] = float(metrics.combine(err, scale).mean())
        if model.has_channels:
            for v, name in enumerate(model.variables):
                summary[f"{role}_rmse_{name}"] = float(err[:, v].mean())
        bias_v = metrics.bias(torch.from_numpy((rec.analysis if role == "analysis" else rec.background)[keep]), truth, weights, model.has_channels)
        summary[f"{role}_bias"] = float(bias_v.mean())
    if rec.ensemble:
        key = "ensemble_spread" if not model.has_channels else None
        if key:
            spread_v = float(np.sqrt(np.nanmean(rec.scalars[key][keep] ** 2)))
            summary["spread"] = spread_v
            summary["spread_skill"] = metrics.spread_skill(spread_v, summary["analysis_rmse"], s.members)
            summary["crps"] = float(np.nanmean(rec.scalars["analysis_crps"][keep]))
        else:
            ratios = []
            for v, name in enumerate(model.variables):
                sp = float(np.sqrt(np.nanmean(rec.scalars[f"ensemble_spread_{name}"][keep] ** 2)))
                summary[f"spread_{name}"] = sp
                summary[f"crps_{name}"] = float(np.nanmean(rec.scalars[f"analysis_crps_{name}"][keep]))
                ratios.append(metrics.spread_skill(sp, summary[f"analysis_rmse_{name}"], s.members))
            summary["spread_skill"] = float(np.mean(ratios))
            summary["spread"] = float(metrics.combine(torch.tensor([[summary[f"spread_{n}"] for n in model.variables]]), scale)[0])
    for name in ("omb_rms", "oma_rms"):
        if name in rec.scalars:
            summary[name] = float(np.nanmean(rec.scalars[name][keep]))
    summary["obs_flagged"] = int((rec.obs_qc[: rec.completed] != QC_USED).sum())
    # Says outright when nothing was assimilated (every value flagged: analysis = background).
    summary["obs_used"] = int(np.nansum(rec.scalars["obs_used"][: rec.completed])) if "obs_used" in rec.scalars else 0
    for name, arr in rec.scalars.items():
        if name.startswith("diag_"):
            summary[name] = float(np.nanmean(arr[keep]))
    done = rec.completed - start
    summary["prepare_seconds"] = prepare_seconds
    # What training the method's learned state cost, even when this run read it from the cache.
    summary["train_seconds"] = float(s.method.train_seconds or 0.0)
    summary["seconds_per_cycle"] = loop_seconds / done if done else float("nan")
    summary["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    summary["version"] = __version__
    return summary
