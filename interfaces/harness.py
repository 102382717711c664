"""The cycling loop. The harness owns the truth run, the observations and the forecasts, so
every method sees exactly the same data for a given seed; a method owns only its analysis.

One cycle k (k = 0 .. cycles-1) forecasts the analysis ensemble valid at time k to time k+1,
assimilates the observations of time k+1 and records the result.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import forecast_bias, io, model_error
from .assimilator import Assimilator, Context
from .errors import HarnessError, PluginError, UsageError
from .observations import QC_BACKGROUND, QC_USED, Observations, build_operator
from .options import resolve
from .registry import Registry, get_registry, instantiate_method
from .scoring import Recorder, summarise

def default_cache() -> Path:
    """The cache directory: $DA_HARNESS_CACHE, else ~/.cache/da-harness."""
    return Path(os.environ.get("DA_HARNESS_CACHE") or Path.home() / ".cache" / "da-harness")

CLIMATOLOGY_SIZE = 2000
#: Experiment settings a method's Context never holds: each would let it regenerate the truth
#: (the truth model's options and stochastic forcing too: an imperfect-model twin's methods
#: know only the forecast model).
HIDDEN_FROM_METHODS = ("seed", "truth_file", "observations_file", "truth_options", "model_error")


@dataclass
class Experiment:
    """What to run. Option dicts hold ``--set`` values (strings or typed)."""

    model: str = "lorenz96"
    method: str = "free"
    obs: str = "all"
    obs_std: str | float | None = None
    cycles: int = 100
    burn_in: int | None = None  # default: the model's (a tenth; on the sphere half the run, up to 100)
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
    overwrite: bool = False  # replace an existing --out file (else a complete or partial one is refused)
    #: The truth run's model options that differ from the forecast model's (--truth-set) and its
    #: stochastic forcing (--model-error, interfaces/model_error.py): the imperfect-model twin.
    truth_options: dict[str, Any] = field(default_factory=dict)
    model_error: str | None = None
    #: A mean forecast-bias correction from a named model's states, the analogue of reanalysis
    #: data (--forecast-bias 'key=value;...', interfaces/forecast_bias.py); None: off.
    forecast_bias: str | None = None

    def settings(self) -> dict[str, Any]:
        """What defines the experiment's numbers (stored in the run file, checked on resume)."""
        return {
            "model": self.model, "method": self.method, "obs": self.obs,
            "obs_std": "" if self.obs_std is None else str(self.obs_std),
            "cycles": self.cycles, "burn_in": self.burn_in, "members": self.members, "seed": self.seed,
            "model_options": dict(self.model_options), "method_options": dict(self.method_options),
            "qc_background": self.qc_background,
            "truth_file": self.truth_file or "", "observations_file": self.observations_file or "",
            # Only when set, so that perfect-model run files written before these existed resume.
            **({"truth_options": dict(self.truth_options)} if self.truth_options else {}),
            **({"model_error": self.model_error} if (self.model_error or "").strip() not in ("", "none") else {}),
            **({"forecast_bias": self.forecast_bias} if (self.forecast_bias or "").strip() not in ("", "none") else {}),
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
    #: The options of the model that ran the truth (None: the truth came from a file).
    truth_model_options: dict[str, Any] | None = None
    #: b, added to every cycled forecast (--forecast-bias), and the data model's options.
    forecast_bias: torch.Tensor | None = None
    forecast_bias_options: dict[str, Any] | None = None


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
    if exp.burn_in is None:  # the model's default: a tenth, or longer where filters settle slowly
        exp.burn_in = registry.model(exp.model).factory.default_burn_in(exp.cycles)
    cache_dir = Path(exp.cache_dir) if exp.cache_dir else default_cache()
    if exp.device != "cpu" and not (exp.device.startswith("cuda") and torch.cuda.is_available()):
        raise UsageError(f"--device {exp.device} is not available here; valid devices: cpu" + (", cuda" if torch.cuda.is_available() else ""))

    model = build_model(registry, exp.model, exp.model_options, cache_dir)
    model.progress = exp.progress  # spin-up and climatology bars (interfaces/cache.py)
    model_error.parse(exp.model_error, model)  # a bad --model-error fails before any model run
    bias_options = forecast_bias.parse(exp.forecast_bias, model)  # and a bad --forecast-bias
    method = instantiate_method(registry, exp.method, exp.method_options, model=exp.model)
    entry = registry.assimilator(exp.method)
    members = exp.members or getattr(entry.factory, "preferred_members", None) or 20
    with np.errstate(over="ignore", invalid="ignore"):  # an unstable model is reported below
        climatology = model.climatology(CLIMATOLOGY_SIZE).to(torch.float64)
    _check_finite_run(climatology, exp.model, "climatology", "state", model.options)

    if exp.observations_file and ((exp.obs or "all") != "all" or exp.obs_std not in (None, "")):
        raise UsageError("--obs and --obs-std describe generated observations; they cannot be combined with --observations")
    # Both files are read together: their time stamps decide which truth each observation
    # observes (io.TIME_RULE), so a run file given as both cannot be paired one cycle off.
    if exp.truth_file and ("truth_options" in exp.settings() or "model_error" in exp.settings()):
        raise UsageError("--truth-set and --model-error describe a generated truth; they cannot be combined with --truth")
    truth, observed = io.load_inputs(exp.truth_file, exp.observations_file, model, exp.cycles, registry)
    truth_model_options = None
    if truth is None:
        truth_model, forcing = _truth_model(exp, registry, model, cache_dir)
        with np.errstate(over="ignore", invalid="ignore"):
            truth = model_error.truth_run(truth_model, exp.cycles, _stream(exp.seed, "truth"), forcing,
                                          _stream(exp.seed, "truth-model-error")).to(torch.float64)
        _check_finite_run(truth, exp.model, "truth run", "time", truth_model.options)
        truth_model_options = dict(truth_model.options)

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
    bias = None
    if bias_options is not None:
        data_model = _same_kind(registry, exp, model, bias_options, cache_dir, "--forecast-bias")
        bias = forecast_bias.estimate(model, data_model)
        _check_finite_run(bias, exp.model, "forecast bias estimate", "state", data_model.options)
    return Setup(exp, model, method, operator, truth, obs_values, obs_std, obs_qc, climatology,
                 members, context, registry, truth_model_options, bias, bias_options)


def _truth_model(exp: Experiment, registry: Registry, model, cache_dir: Path):
    """The model that runs the truth and its stochastic forcing: the forecast model itself in a
    perfect-model twin, else a model built with ``--truth-set`` over the forecast model's
    options (its own spin-up cache: the truth starts on its own attractor)."""
    if not exp.truth_options:
        return model, model_error.parse(exp.model_error, model)
    truth_model = _same_kind(registry, exp, model, exp.truth_options, cache_dir, "--truth-set")
    return truth_model, model_error.parse(exp.model_error, truth_model)


def _same_kind(registry: Registry, exp: Experiment, model, options: dict, cache_dir: Path, flag: str):
    """A model of the forecast model's kind with ``options`` over its own (the truth's, or the
    data a forecast-bias correction is estimated from), on the same grid and cycle."""
    try:
        other = build_model(registry, exp.model, {**exp.model_options, **options}, cache_dir)
    except UsageError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    if tuple(other.state_shape) != tuple(model.state_shape) or other.cycle_length != model.cycle_length:
        raise UsageError(f"{flag} {json.dumps(options, default=str)} changes the state shape or the cycle length of "
                         f"model '{exp.model}'; it must live on the forecast model's grid and times")
    other.progress = exp.progress
    return other


def _blow_up(s: Setup, k: int, start: int, ensemble: torch.Tensor) -> PluginError:
    """The model, not the method, made non-finite values: say which, when, and the likely cause."""
    exp = s.experiment
    source = "the initial ensemble" if k == 0 else f"the analysis of cycle {k - 1}"
    size, typical = float(ensemble.abs().max()), float(s.climatology.abs().max())
    message = (f"model '{exp.model}' forecast non-finite values at cycle {k}, from {source} "
               f"(largest |x| {size:.3g}; climatology's {typical:.3g}); ")
    y = s.obs_values[k - 1][s.obs_qc[k - 1] == QC_USED] if k > 0 else s.obs_values[:0]
    if k > 0 and size > 10 * typical and y.numel() and float(y.abs().max()) > 10 * typical:
        message += (f"the observations of cycle {k - 1} reach {float(y.abs().max()):.3g}: check them, "
                    f"or reject gross values with --qc-background K")
    else:
        message += f"the model is unstable with options {json.dumps(s.model.options, default=str)}"
    return PluginError(message)


def _check_finite_run(values: torch.Tensor, model: str, what: str, unit: str, options) -> None:
    """A truth run or climatology that overflowed: the model's options, not a method, are at fault."""
    bad = ~torch.isfinite(values.reshape(values.shape[0], -1)).all(1)
    if bad.any():
        raise UsageError(f"model '{model}' {what} became non-finite (first at {unit} {int(bad.nonzero()[0])}) "
                         f"with options {json.dumps(options, default=str)}; the model is unstable with them")


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
    #: What a resumed run would continue from (the run file's resume_* variables).
    resume_state: dict[str, Any] | None = None

    def dataset(self):
        """The run file's xarray.Dataset, built by the function that writes the file."""
        return io.build_dataset(self.setup, self.recorder, self.resume_state, self.summary)


def run_experiment(exp: Experiment, registry: Registry | None = None) -> RunResult:
    """Set up, prepare the method, cycle, and summarise (writing ``exp.out`` if given)."""
    wall0 = time.perf_counter()
    if exp.resume and not exp.out:
        raise UsageError("--resume needs --out FILE (the run file to continue)")
    # Before any work: a bad --out must not lose a finished run at its last write.
    out = io.check_output(exp.out, exp.resume, exp.overwrite) if exp.out else None
    s = setup(exp, registry)
    entry = s.registry.assimilator(exp.method)
    rec = Recorder(s)
    forecast_gen = _stream(exp.seed, "model-noise")
    ensemble = None
    start = 0
    if exp.resume:
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
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below, in one line
            background = s.model.forecast(ensemble, forecast_gen if s.members > 1 else None)
            if s.forecast_bias is not None:
                background = background + s.forecast_bias
        if not torch.isfinite(background).all():
            raise _blow_up(s, k, start, ensemble)
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
    resume_state = _resume_state(ensemble, forecast_gen, s)
    if out is not None:
        summary["out"] = str(out)
        io.write_run(out, s, rec, resume_state, summary)
    return RunResult(summary, rec, s, resume_state)


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
