"""`da-harness`: list plugins, run a cycling experiment, train a method, compare methods."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import TYPE_CHECKING, Any, Sequence

from . import __version__
from .errors import HarnessError, UsageError
from .model_error import add_truth_args
from .registry import get_registry, report_problems

if TYPE_CHECKING:  # pragma: no cover
    from .harness import Experiment


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line with exit code 2 and name the valid choices."""

    def error(self, message: str):  # pragma: no cover - exercised through the CLI tests
        raise UsageError(message)


THREADS_HELP = ("torch threads (default 1, or $DA_HARNESS_THREADS): on a shared or small machine "
                "more threads than free cores made cycles tens of times slower")


class _SubParser(_Parser):
    """A subcommand's parser: also takes the global --threads, so it may follow the subcommand."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # SUPPRESS: when not given here, the value given before the subcommand (or none) stands.
        self.add_argument("--threads", type=int, default=argparse.SUPPRESS, help=THREADS_HELP)


class _Once(argparse.Action):
    """An option that may be given once: a second --method would silently win otherwise."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) is not None:
            raise UsageError(f"{option_string} given twice ('{getattr(namespace, self.dest)}' and '{values}'); "
                             f"run takes one method: to compare several use `da-harness compare --methods a,b`")
        setattr(namespace, self.dest, values)


def env_threads() -> int:
    """$DA_HARNESS_THREADS, else 1; a value that is not a positive integer is a one-line error."""
    text = os.environ.get("DA_HARNESS_THREADS", "").strip()
    if not text:
        return 1
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"DA_HARNESS_THREADS='{text}' is not a positive integer (torch threads; unset it for 1)")
    return value


def _add_experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="lorenz96", help="testbed (see `da-harness models`)")
    p.add_argument("--obs", default="all", help="observation network: all, every:K, random:F, arctan+..., @var")
    p.add_argument("--obs-std", default=None, help="observation-error std: one number or var=value,...")
    p.add_argument("--cycles", type=int, default=100, help="number of assimilation cycles (burn-in included)")
    p.add_argument("--burn-in", type=int, default=None, help="cycles left out of the scores (default: a tenth; on sw half the run, up to 100)")
    p.add_argument("--members", type=int, default=None, help="ensemble size (default: the method's preference)")
    p.add_argument("--seed", type=int, default=0, help="seed for truth, observations and the method")
    p.add_argument("--device", default="cpu", help="where methods train and analyse: cpu or cuda (the truth and the model's forecasts stay on the CPU)")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="a method or model option (repeatable); prefix with 'model.' or 'method.' if ambiguous")
    p.add_argument("--cache-dir", default=None, help="where climatologies and checkpoints are cached")
    p.add_argument("--json", action="store_true", help="print a one-line JSON summary on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="da-harness", description=__doc__)
    parser.add_argument("--version", action="version", version=f"da-harness {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--threads", type=int, default=None, help=THREADS_HELP)
    sub = parser.add_subparsers(dest="command", parser_class=_SubParser)
    sub.required = True

    m = sub.add_parser("methods", help="list the registered assimilators")
    m.add_argument("--json", action="store_true")
    md = sub.add_parser("models", help="list the registered models")
    md.add_argument("--json", action="store_true")

    run = sub.add_parser("run", help="run a cycling experiment")
    run.add_argument("--method", required=True, action=_Once, help="assimilator (see `da-harness methods`)")
    _add_experiment_args(run)
    run.add_argument("--out", default=None, help="netCDF run file to write (cycle by cycle, atomically)")
    run.add_argument("--resume", action="store_true", help="continue the run file given by --out")
    run.add_argument("--overwrite", action="store_true",
                     help="replace an existing --out file (without it, an existing run file is refused)")
    run.add_argument("--checkpoint-every", type=int, default=0, help="write the run file every N cycles")
    run.add_argument("--qc-background", type=float, default=0.0, help="background check: reject |O-B| > K sigma")
    run.add_argument("--truth", default=None, help="truth trajectory from a netCDF file (run-file format)")
    add_truth_args(run)
    run.add_argument("--observations", default=None, help="observations from a netCDF file (run-file format)")

    train = sub.add_parser("train", help="train a method's models (e.g. losda's VAE and diffusion prior)")
    train.add_argument("--method", required=True, action=_Once)
    train.add_argument("--steps", type=int, default=None, help="training steps (default: the method's)")
    _add_experiment_args(train)

    from .compare import add_compare_parser  # the comparison engine owns its arguments

    add_compare_parser(sub)
    from .tune import add_tune_parser  # `tune` owns its arguments too

    add_tune_parser(sub)
    from .diagnostics import add_diagnose_parser

    add_diagnose_parser(sub)
    return parser


def experiment_from_args(args, registry) -> "Experiment":
    from .api import experiment  # one place turns the options into an Experiment, for both

    return experiment(
        args.model, args.method, obs=args.obs, obs_std=args.obs_std, cycles=args.cycles,
        burn_in=args.burn_in, members=args.members, seed=args.seed, device=args.device,
        options=args.options, truth_options=getattr(args, "truth_options", None),
        model_error=getattr(args, "model_error", None), forecast_bias=getattr(args, "forecast_bias", None),
        truth=getattr(args, "truth", None), observations=getattr(args, "observations", None),
        out=getattr(args, "out", None), resume=getattr(args, "resume", False),
        overwrite=getattr(args, "overwrite", False), qc_background=getattr(args, "qc_background", 0.0),
        checkpoint_every=getattr(args, "checkpoint_every", 0), cache_dir=args.cache_dir,
        progress=not args.no_progress, train_steps=getattr(args, "steps", None), registry=registry,
    )


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def print_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps({k: _clean(v) for k, v in summary.items()}))
        return
    for key, value in summary.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{key:>22}: {text}")


def cmd_methods(args, registry) -> int:
    from .registry import model_default_table

    rows = [(n, e.description, e.plugin) for n, e in sorted(registry.assimilators.items())]
    tables = {n: model_default_table(registry, n) for n, _, _ in rows}  # per-model defaults, with sources
    if args.json:
        print(json.dumps([{"name": n, "description": d, "plugin": p, "model_defaults": tables[n]} for n, d, p in rows]))
    else:
        width = max((len(n) for n, _, _ in rows), default=4)
        pwidth = max((len(p) for _, _, p in rows), default=6)
        print(f"{'name':<{width}}  {'plugin':<{pwidth}}  description")
        for n, d, p in rows:
            print(f"{n:<{width}}  {p:<{pwidth}}  {d}")
            indent = " " * (width + pwidth + 6)  # under the description: defaults on one model
            if "error" in tables[n]:
                print(f"{indent}model defaults broken: {tables[n]['error']}")
                continue
            for model, entry in tables[n].items():
                print(f"{indent}on {model}: " + ", ".join(f"{k}={v}" for k, v in entry["options"].items()))
    return 0


def cmd_models(args, registry) -> int:
    rows = [(n, e.description, e.plugin) for n, e in sorted(registry.models.items())]
    if args.json:
        print(json.dumps([{"name": n, "description": d, "plugin": p} for n, d, p in rows]))
    else:
        for n, d, p in rows:
            print(f"{n:<10}  {p:<10}  {d}")
    return 0


def cmd_run(args, registry) -> int:
    from .harness import run_experiment

    result = run_experiment(experiment_from_args(args, registry), registry)
    print_summary(result.summary, args.json)
    return 0


def cmd_train(args, registry) -> int:
    from .harness import setup

    exp = experiment_from_args(args, registry)
    exp.cycles = max(exp.cycles, 2)
    s = setup(exp, registry)
    summary = s.method.train(s.context)
    print_summary({"method": args.method, "model": args.model, **(summary or {})}, args.json)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        registry = get_registry()
        report_problems(registry)
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --version and --help print, then end here
            return int(exc.code or 0)
        if args.threads is None:
            args.threads = env_threads()
        if args.threads < 1:
            raise UsageError(f"--threads must be a positive integer, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
        if hasattr(args, "cache_dir"):  # a command that reads the cache: ship what it may need
            from .harness import default_cache
            from .shipped import seed

            seed(args.cache_dir or default_cache())
        handler = {"methods": cmd_methods, "models": cmd_models, "run": cmd_run, "train": cmd_train}.get(args.command)
        if handler is None:
            from .compare import cmd_compare
            from .diagnostics import cmd_diagnose
            from .tune import cmd_tune

            handler = {"tune": cmd_tune, "diagnose": cmd_diagnose}.get(args.command, cmd_compare)
        return handler(args, registry)
    except HarnessError as exc:
        if debug:
            raise
        print(f"da-harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("da-harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
