"""The comparison engine: many runs (methods x seeds x settings), aggregated into one table per
(model, observations).

Every method of a table sees the same truth and observations per seed, because the harness
derives them from (seed, model, obs) alone. Jobs run through interfaces.sweep (serially or on
Dask); tables and plots are written by interfaces.report.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from .errors import UsageError, unknown_name
from .grouping import group_key, group_name
from .options import parse_assignments, resolve
from . import statistics, tuned
from .statistics import t_interval
from .sweep import job_hash as sweep_job_hash

SUITE_DIRS = (Path(__file__).resolve().parent.parent / "benchmarks" / "suites", Path("benchmarks") / "suites")

#: Table columns in order; a trailing '*' stands for the per-variable scores of channel models.
METRICS = ("analysis_rmse", "analysis_rmse_*", "background_rmse", "background_rmse_*", "spread_skill",
           "crps", "crps_*", "omb_norm", "oma_norm", "omb_rms", "oma_rms", "train_seconds", "prepare_seconds",
           "seconds_per_cycle", "forecasts_per_cycle", "network_calls_per_cycle", "peak_memory_mb")


# --- command line ---------------------------------------------------------------------------
def add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare methods on the same truth and observations")
    p.add_argument("--suite", default=None, help="a suite in benchmarks/suites (quick, full, regimes) or a .toml/.json file")
    p.add_argument("--model", default=None, help="testbed (default lorenz96; with --suite: only this model)")
    p.add_argument("--methods", default=None, help="comma-separated methods (with --suite: only these)")
    p.add_argument("--tables", default=None, metavar="PREFIX,...",
                   help="with --suite: only the tables whose name starts with one of these (e.g. sw-32x64-random0.05); "
                        "end one with '$' for that table alone (sw-32x64-random0.05$ leaves out sw-32x64-random0.05-truth...)")
    p.add_argument("--obs", action="append", default=None, metavar="SPEC[;SPEC...]",
                   help="observation network(s) (default all); repeat --obs or separate specs with ';'. "
                        "Without ';' a comma starts a new spec only where a kind follows "
                        "(random:0.05,every:2 is two specs; indices:1,2,3 and random:0.05@h,u are one)"),
    p.add_argument("--obs-std", default=None, help="observation-error std")
    from .model_error import add_truth_args

    add_truth_args(p)  # with --suite, they replace every block's truth_options / model_error
    p.add_argument("--seeds", default=None, metavar="K|S1,S2,...",
                   help="scoring seeds: K for 0..K-1, or a list (default 1, or the suite's scoring_seeds)")
    p.add_argument("--cycles", type=int, default=None, help="cycles per run (default 100, or the suite's)")
    p.add_argument("--burn-in", type=int, default=None, help="cycles left out of the scores")
    p.add_argument("--members", type=int, default=None, help="ensemble size of the ensemble methods (those not preferring 1 member)")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="option for every method/model declaring KEY; 'METHOD.KEY' or 'model.KEY' for one")
    p.add_argument("--pairs", default=None, metavar="A:B,...",
                   help="also report the seed-by-seed RMSE difference A - B for these method pairs (default: the suite's)")
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    p.add_argument("--serial", action="store_true", help="run the jobs one after another in this process")
    p.add_argument("--out", default=None, help="output folder (default runs/compare-<suite or model>)")
    p.add_argument("--cache-dir", default=None, help="where climatologies and checkpoints are cached")
    add_device_arg(p)
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary instead of the table")
    p.add_argument("--plan", action="store_true",
                   help="say, per table and row, which seeds are done, part-way or still to run in --out, with "
                        "an estimate of the seconds left; nothing is run or trained")
    p.add_argument("--retry-failed", action="store_true",
                   help="run again the jobs whose failure (a divergence) an earlier run recorded beside its run file; "
                        "by default such a job is read back as failed while the code is unchanged")
    p.add_argument("--finished", action="store_true",
                   help="interim tables from the runs already finished in --out, written to OUT/interim/ (the final "
                        "tables are untouched); each row says how many of its seeds it has; nothing is run or trained")


def add_device_arg(p) -> None:
    p.add_argument("--device", default="cpu",
                   help="where the methods train and analyse: cpu or cuda (the truth and the forecasts stay on the "
                        "CPU); a CUDA run is a job of its own, never read back as the CPU one")


def check_device(device: str) -> str:
    """``device`` if this machine has it, else one line naming the valid ones (before any work;
    the harness checks again in each job)."""
    import torch

    if device == "cpu" or (device.startswith("cuda") and torch.cuda.is_available()):
        return device
    raise UsageError(f"--device {device} is not available here; valid devices: cpu" + (", cuda" if torch.cuda.is_available() else ""))


def cmd_compare(args, registry) -> int:
    t0 = time.perf_counter()
    suite = load_suite(args.suite) if args.suite else None
    protocol: dict = {}
    jobs = build_jobs(args, suite, registry, protocol)
    compared = {j["method"] for j in jobs}
    if args.pairs is not None:
        pairs = parse_pairs(args.pairs, compared)
    else:  # a suite's pairs, less those that a --methods filter left without both methods
        pairs = [p for p in parse_pairs((suite or {}).get("pairs", []), None) if set(p) <= compared]
    out = Path(args.out or f"runs/compare-{suite['name'] if suite else (args.model or 'lorenz96')}")
    if args.plan and args.finished:
        raise UsageError("--plan and --finished are two views of a sweep: give one")
    if args.finished:
        result = report_finished(jobs, out, registry, plots=not args.no_plots, suite=suite,
                                 command=_command_line(), pairs=pairs, protocol=protocol)
        print(json.dumps(_clean(result["json"]), default=str) if args.json else result["markdown"])
        return 0
    if args.plan:
        from .plan import format_plan, plan_json, plan_rows

        records = [{"job": j} for j in jobs]
        for recs in by_table(records).values():  # rows labelled as the tables will label them
            label_rows(recs)
        tuning_cost = {h: c for info in protocol.values() for h, c in info.get("tuning_cost", {}).items()}
        rows = plan_rows(records, out / "runs", registry, tuning_cost)
        print(plan_json(rows) if args.json else format_plan(rows, out / "runs"))
        return 0
    result = compare(jobs, out, registry, serial=args.serial, workers=args.workers, scheduler=args.scheduler,
                     cache_dir=args.cache_dir, plots=not args.no_plots, started=t0, suite=suite,
                     command=_command_line(), pairs=pairs, protocol=protocol, retry_failed=args.retry_failed)
    if args.json:
        print(json.dumps(_clean(result["json"]), default=str))
    else:
        print(result["markdown"])
    return 1 if result["failed"] else 0


def parse_pairs(items: str | list[str], methods: set[str] | None) -> list[tuple[str, str]]:
    """'losda:dps,losda:3dvar' (or a suite's list of such items) -> [('losda', 'dps'),
    ('losda', '3dvar')], names checked against the compared methods (when given)."""
    pairs = []
    for item in _as_list(items):
        a, sep, b = item.partition(":")
        if not sep or not a or not b or a == b:
            raise UsageError(f"--pairs needs METHOD:OTHER items separated by commas, got '{item}'")
        for name in (a, b) if methods is not None else ():
            if name not in methods:
                raise UsageError(f"--pairs names method '{name}', which is not compared; compared: {', '.join(sorted(methods))}")
        pairs.append((a, b))
    return pairs


def _command_line() -> str:
    """The command as typed, when da-harness was started from a shell."""
    import shlex

    if Path(sys.argv[0]).name in ("da-harness", "cli.py", "run_suite.py"):
        return shlex.join(["da-harness", *sys.argv[1:]]) if Path(sys.argv[0]).name != "run_suite.py" else shlex.join(["python", *sys.argv])
    return "da-harness compare (called from Python)"


# --- suites and jobs ------------------------------------------------------------------------
def find_suite(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".toml", ".json") and path.exists():
        return path
    for folder in SUITE_DIRS:
        for ext in (".toml", ".json"):
            if (folder / f"{name}{ext}").exists():
                return folder / f"{name}{ext}"
    valid = sorted({p.stem for d in SUITE_DIRS if d.is_dir() for p in d.iterdir() if p.suffix in (".toml", ".json")})
    raise UsageError(f"unknown suite '{name}'; valid suites: {', '.join(valid) or '(none found)'} (or a .toml/.json path)")


def load_suite(name: str) -> dict[str, Any]:
    path = find_suite(name)
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            import tomllib

            data = tomllib.loads(path.read_text())
    except ValueError as exc:
        raise UsageError(f"suite file '{path}' is not valid {path.suffix[1:]}: {exc}") from None
    if not data.get("experiments"):
        raise UsageError(f"suite file '{path}' defines no [[experiments]]")
    data.setdefault("name", path.stem)
    data["path"] = str(path)
    return data


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def parse_obs(values, registry) -> list[str]:
    """``--obs`` values (repeatable, or a suite's list or string) -> observation specs.

    A ';' inside a value separates specs. Without one, a comma separates specs only where the
    text after it starts a spec (optional 'transform+' then a known kind, e.g. 'random:' or
    'arctan+every:2'), so commas inside a spec ('indices:1,2,3', 'random:0.05@h,u') stay.
    """
    from .observations import BUILTIN_KINDS, TRANSFORMS

    kinds = sorted({*BUILTIN_KINDS, *registry.observation_kinds}, key=len, reverse=True)
    start = re.compile(rf"^\s*(?:(?:{'|'.join(map(re.escape, TRANSFORMS))})\s*\+\s*)*"
                       rf"(?:{'|'.join(map(re.escape, kinds))})\s*(?:$|[:@])")
    specs: list[str] = []
    for value in [values] if isinstance(values, str) else list(values or []):
        if ";" in value:
            specs += [v.strip() for v in value.split(";")]
            continue
        pieces = value.split(",")
        current = [pieces[0]]
        for piece in pieces[1:]:
            if start.match(piece):
                specs.append(",".join(current).strip())
                current = [piece]
            else:
                current.append(piece)
        specs.append(",".join(current).strip())
    empty = [v for v in specs if not v]
    if empty or not specs:
        raise UsageError(f"--obs has an empty observation spec in {values!r}; separate specs with ';' or repeat --obs")
    return specs


def parse_seeds(value, what: str, count_ok: bool = True) -> list[int]:
    """Seeds from K (0..K-1, the old `seeds = K`; only where ``count_ok``), 'a,b,c' or a list
    of integers."""
    try:
        if count_ok and (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())):
            k = int(value)
            if k < 1:
                raise ValueError
            return list(range(k))
        seeds = [int(v) for v in _as_list(value)]
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be a count K (seeds 0..K-1) or a list of integers, got {value!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"{what} must list distinct seeds, got {value!r}")
    return seeds


def block_seeds(b: dict, suite: dict, cli_seeds=None) -> tuple[list[int], list[int]]:
    """(scoring seeds, tuning seeds) of a suite block (its own keys, else the suite's; the old
    `seeds = K` means scoring seeds 0..K-1); refuses seeds that are both."""
    name = f"suite '{suite.get('name')}' block {b.get('model')}"
    if cli_seeds is not None:
        scoring = parse_seeds(cli_seeds, "--seeds")
    else:
        raw = next((src[k] for src in (b, suite) for k in ("scoring_seeds", "seeds") if k in src), 1)
        scoring = parse_seeds(raw, f"{name}: scoring_seeds")
    raw = b.get("tuning_seeds", suite.get("tuning_seeds"))
    tuning = parse_seeds(raw, f"{name}: tuning_seeds", count_ok=False) if raw else []
    both = sorted(set(scoring) & set(tuning))
    if both:
        raise UsageError(f"{name}: seeds {', '.join(map(str, both))} are both scoring and tuning seeds; "
                         "a table must not score the seeds its options were tuned on")
    return scoring, tuning


def _merge(*tables: dict) -> dict:
    """Later tables win, key by key at every depth (a block's dps = {zeta = ...} keeps the
    defaults' dps = {preset = ...})."""
    out: dict = {}
    for t in tables:
        for k, v in (t or {}).items():
            out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _experiments(args, suite) -> list[dict]:
    """The suite's experiment blocks (defaults merged in) or one block from the arguments."""
    if suite is None:
        if not args.methods:
            raise UsageError("compare needs --methods a,b,c (or --suite quick|full)")
        return [{"model": args.model or "lorenz96", "methods": _as_list(args.methods),
                 "obs": args.obs or ["all"], "cycles": args.cycles or 100,
                 "scoring_seeds": parse_seeds(args.seeds or 1, "--seeds"), "tuning_seeds": []}]
    blocks = []
    for block in suite["experiments"]:
        b = _merge(suite.get("defaults", {}), block)
        if args.model and b["model"] != args.model:
            continue
        if args.methods:
            b["methods"] = [m for m in _as_list(b["methods"]) if m in _as_list(args.methods)]
            # Variants of the methods a --methods filter left out go with them.
            b["variants"] = {m: v for m, v in (b.get("variants") or {}).items() if m in b["methods"]}
        if args.cycles is not None:
            b["cycles"] = args.cycles
        b["scoring_seeds"], b["tuning_seeds"] = block_seeds(b, suite, args.seeds)
        if args.obs:
            b["obs"] = args.obs
        blocks.append(b)
    if not blocks:
        models = sorted({b["model"] for b in suite["experiments"]})
        raise UsageError(f"suite '{suite['name']}' has no experiment on model '{args.model}'; its models: {', '.join(models)}")
    return blocks


def _route(options: dict[str, str], model: str, methods: list[str], registry) -> tuple[dict, dict[str, dict]]:
    """Route `--set` keys: 'model.K' / 'METHOD.K' to one target, a bare key to all that declare it."""
    model_defaults = registry.model(model).factory.defaults
    method_defaults = {m: getattr(registry.assimilator(m).factory, "defaults", {}) for m in methods}
    model_opts: dict = {}
    method_opts: dict[str, dict] = {m: {} for m in methods}
    for key, value in options.items():
        prefix, _, bare = key.partition(".")
        if bare and prefix == "model":
            model_opts[bare] = value
            continue
        if bare and prefix in method_opts:
            method_opts[prefix][bare] = value
            continue
        owners = [m for m in methods if key in method_defaults[m]]
        for m in owners:
            method_opts[m][key] = value
        if key in model_defaults:
            model_opts[key] = value
        elif not owners:
            valid = sorted(set(model_defaults).union(*map(set, method_defaults.values())))
            raise UsageError(f"unknown option '{key}' for model '{model}' or methods {', '.join(methods)}; "
                             f"valid options: {', '.join(valid) or '(none)'}")
    return model_opts, method_opts


def build_jobs(args, suite, registry, protocol: dict | None = None) -> list[dict]:
    """Every (experiment block x obs x method x seed) as a sweep job; names checked first.

    ``protocol``, when given, is filled per table name with its scoring and tuning seeds and,
    per method, the options applied from the block's tuned file (see interfaces/tuned.py)."""
    from .registry import effective_options
    from .sweep import job_hash as sweep_hash, make_job

    cli_options = parse_assignments(args.options)
    device = check_device(getattr(args, "device", "cpu"))
    on_device = {} if device == "cpu" else {"device": device}
    jobs, skipped = [], set()
    for b in _experiments(args, suite):
        model = b["model"]
        registry.model(model)  # unknown model: one line naming the valid ones
        methods = _as_list(b["methods"])
        if not methods:
            raise UsageError(f"no methods left to run on '{model}' (check --methods against the suite)")
        for m in methods:
            if m not in registry.assimilators:
                raise unknown_name("method", m, registry.assimilators)
        model_cli, method_cli = _typed(*_route(cli_options, model, methods, registry), model, registry)
        model_options = {**b.get("model_options", {}), **model_cli}
        imperfect = _imperfect(args, b, model, registry)
        members = b.get("members", {})
        variants = _variants(b, methods, registry)
        tuned_file = b.get("tuned", (suite or {}).get("tuned"))
        entries = tuned.read(tuned.resolve_path(tuned_file)) if tuned_file else []
        for obs in parse_obs(b["obs"], registry):
            table = group_name({"model": model, "model_options": model_options, "obs": obs, **imperfect})
            if not _selected(table, getattr(args, "tables", None)):
                skipped.add(table)
                continue
            info = (protocol if protocol is not None else {}).setdefault(
                table, {"scored_seeds": set(), "tuning_seeds": set(), "tuned": {}})
            info["scored_seeds"].update(b["scoring_seeds"])
            info["tuning_seeds"].update(b["tuning_seeds"])
            for m, variant in ((m, v) for m in methods for v in [None, *variants.get(m, [])]):
                size = members.get(m) if isinstance(members, dict) else members
                own = dict(variant or {})
                size = own.pop("members", size)
                if args.members and (getattr(args, "members_for_every_method", False)
                                     or getattr(registry.assimilator(m).factory, "preferred_members", None) != 1):
                    size = args.members  # ensemble methods only (free or 3dvar stay single-member), unless tune's one method
                applied = _tuned_options(entries, tuned_file, table, m, size, b["scoring_seeds"], {**own, **method_cli[m]},
                                         variant=variant is not None)
                entry = tuned.find(entries, table, m, size) if applied else None
                if entry:
                    info["tuning_seeds"].update(entry["seeds"])
                    if variant is None:
                        info["tuned"][m] = applied
                # What the chosen setting cost per cycle in its tuning runs: compare --plan's
                # estimate for a row none of whose scoring runs has finished yet.
                # A variant counts only when tuned at its own size with nothing of its own beside it.
                own_search = variant is None or (entry is not None and not own and tuned.tuned_size(entry) == size)
                tuning_cost = tuned.seconds_per_cycle(entry) if own_search else None
                for seed in b["scoring_seeds"]:
                    jobs.append(make_job(
                        model=model, method=m, obs=obs, obs_std=args.obs_std or b.get("obs_std"),
                        cycles=int(b["cycles"]), seed=seed,
                        burn_in=args.burn_in if args.burn_in is not None else b.get("burn_in"),
                        members=size, model_options=model_options, **imperfect, **on_device,
                        # The method's defaults for this model are part of the job (and its hash),
                        # under the suite's options and --set: a change to that table reruns it.
                        method_options=effective_options(registry, m, model, {
                            **b.get("method_options", {}).get(m, {}), **applied, **own, **method_cli[m]})))
                    info.setdefault("tuned_jobs", {})[sweep_hash(jobs[-1])] = applied or None
                    if tuning_cost is not None:
                        info.setdefault("tuning_cost", {})[sweep_hash(jobs[-1])] = tuning_cost
                    if variant is None:  # the method's own row, which plain pairs compare
                        info.setdefault("base_jobs", set()).add(sweep_hash(jobs[-1]))
    if not jobs and getattr(args, "tables", None):
        raise UsageError(f"--tables {args.tables} matches no table of this run; its tables: {', '.join(sorted(skipped))}")
    unique = {sweep_hash(j): j for j in jobs}  # overlapping blocks must not run (and write) one job twice
    return list(unique.values())


def _selected(table: str, prefixes: str | None) -> bool:
    """Whether ``--tables`` (comma-separated name prefixes, or whole names ending in '$'; None:
    all) keeps this table. A table's name can be a prefix of another's (sw-32x64-random0.05 of
    sw-32x64-random0.05-truth...): 'NAME$' selects that table alone."""
    def keeps(p: str) -> bool:
        return table == p[:-1] if p.endswith("$") else table.startswith(p)

    return not prefixes or any(keeps(p.strip()) for p in prefixes.split(",") if p.strip())


def _variants(block: dict, methods: list[str], registry) -> dict[str, list[dict]]:
    """A block's ``variants = { letkf = [{ members = 6, inflation = 1.1 }, { members = 10 }] }``: extra
    rows of a listed method, each its block settings with these members and options on top."""
    raw = block.get("variants", {})
    where = f"variants of the {block['model']} block"
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must be a table of method = [{{option = value, ...}}, ...], got {raw!r}")
    for m, items in raw.items():
        if m not in methods:
            raise UsageError(f"{where} name method '{m}', which the block does not run; its methods: {', '.join(methods)}")
        if not isinstance(items, list) or not all(isinstance(v, dict) and v for v in items):
            raise UsageError(f"{where}: '{m}' must be a list of non-empty option tables, got {items!r}")
        valid = {"members", *getattr(registry.assimilator(m).factory, "defaults", {})}
        for key in (k for v in items for k in v if k not in valid):
            raise UsageError(f"{where}: unknown option '{key}' for method '{m}'; valid: {', '.join(sorted(valid))}")
    return raw


def _imperfect(args, block: dict, model: str, registry) -> dict:
    """A block's imperfect-model twin as job fields: ``truth_options`` (typed like the model's
    options, so the job hash does not depend on where they came from) and ``model_error``;
    --truth-set / --model-error replace the block's. Empty for a perfect-model twin, whose jobs
    (and hashes) stay as they were."""
    from . import model_error as errors

    given = parse_assignments(getattr(args, "truth_options", None) or []) or dict(block.get("truth_options", {}))
    spec = getattr(args, "model_error", None)
    spec = (block.get("model_error") or "" if spec is None else spec).strip()
    defaults = registry.model(model).factory.defaults
    typed = resolve(defaults, given, f"the truth of model '{model}' (truth_options / --truth-set)")
    out: dict = {}
    if given:
        out["truth_options"] = {k: typed[k] for k in given}
    if spec and spec != "none":
        if spec.partition(":")[0].strip() not in errors.KINDS:
            errors.parse(spec, None)  # one line naming the valid kinds; the rest is checked per run
        out["model_error"] = spec
    return out


def _tuned_options(entries, path, table: str, method: str, members, scoring: list[int], cli: dict,
                   variant: bool = False) -> dict:
    """The options a tuned file chose for (table, method), less those --set (or a variant's own
    options) override; refuses scoring seeds the tuning used, and an entry tuned at another
    ensemble size (a variant at a size with no entry of its own runs untuned: its row says so)."""
    entry = tuned.find(entries, table, method, members)
    if entry is None:
        return {}
    reused = sorted(set(scoring) & set(entry["seeds"]))
    if reused:
        raise UsageError(f"{method} on {table}: scoring seeds {', '.join(map(str, reused))} were used to tune the "
                         f"options applied from '{path}'; score on other seeds or retune on held-out ones")
    if tuned.at_other_size(entry, members):
        if variant:
            return {}
        raise UsageError(f"{method} on {table}: '{path}' was tuned with {entry['members']} members, this table "
                         f"runs {members}; retune at this size")
    return {k: v for k, v in entry["chosen"].items() if k not in cli}


def _typed(model_opts: dict, method_opts: dict[str, dict], model: str, registry) -> tuple[dict, dict]:
    """`--set` strings converted to the types of the declared defaults, as suite files give them,
    so a job's hash does not depend on where an option came from."""
    def convert(defaults, given, owner):
        return {k: v for k, v in resolve(defaults, given, owner).items() if k in given}

    model_typed = convert(registry.model(model).factory.defaults, model_opts, f"model '{model}'")
    return model_typed, {m: convert(getattr(registry.assimilator(m).factory, "defaults", {}), o, f"method '{m}'")
                         for m, o in method_opts.items()}


# --- running and aggregating ----------------------------------------------------------------
def compare(jobs: list[dict], out: Path, registry, *, serial=False, workers=2, scheduler=None, cache_dir=None,
            plots=True, started=None, suite=None, log=None, command="", pairs=(), protocol=None,
            retry_failed=False) -> dict[str, Any]:
    """Warm the caches and train, run the sweep, write tables and plots; return what was made.
    A job whose failure is recorded is read back as failed unless ``retry_failed``."""
    from . import report, sweep

    started = started or time.perf_counter()
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    out = Path(out)
    # Training times are kept beside the run files, so a rerun that skips finished jobs still
    # reports them.
    times_file = out / "runs" / "train_seconds.json"
    train_seconds = {tuple(k): v for k, v in json.loads(times_file.read_text())} if times_file.exists() else {}
    train_seconds.update(sweep.warm_up(sweep.pending(jobs, out / "runs", registry, retry_failed), registry, cache_dir, log))
    times_file.parent.mkdir(parents=True, exist_ok=True)
    times_file.write_text(json.dumps([[list(k), v] for k, v in train_seconds.items()]))
    records = sweep.run_jobs(jobs, out / "runs", mode="serial" if serial else "dask", workers=workers,
                             scheduler=scheduler, cache_dir=cache_dir, registry=registry if serial else None, log=log,
                             retry_failed=retry_failed)
    for r in records:
        if r["status"] != "failed":
            # The run file's own record first; the warm-up's timing for run files that lack one.
            r["summary"]["train_seconds"] = (r["summary"].get("train_seconds")
                                             or train_seconds.get(sweep.train_key(r["job"]), 0.0))
    for r in records:
        if r["status"] != "failed":  # the per-cycle scores behind the stationarity test
            r["series"] = sweep.scored_series(r["file"], r["summary"].get("burn_in") or 0)
    tables = aggregate(records, pairs, protocol)
    failed = [r for r in records if r["status"] == "failed"]
    header = report.header(wall_seconds=time.perf_counter() - started, suite=suite, command=command,
                           mode="serial" if serial else (scheduler or f"LocalCluster({workers} workers)"))
    header["device"] = report.devices(r["job"] for r in records)
    header["jobs_run"] = sum(r["status"] != "skipped" and not r.get("recorded") for r in records)
    header["jobs_read"] = sum(r["status"] == "skipped" for r in records)
    header["failures_read"] = sum(bool(r.get("recorded")) for r in records)
    # Read run files that predate code versions: their code is unknown (see interfaces/sweep.py).
    header["jobs_read_unversioned"] = sum(r.get("code") == "unrecorded" for r in records)
    header["seconds_by_method"] = seconds_by_method(records)
    files = report.write_all(tables, records, out, header, plots=plots)
    header["wall_seconds"] = time.perf_counter() - started  # tables and plots included
    markdown, summary = _write_documents(out, tables, failed, header, files)
    return {"tables": tables, "failed": failed, "markdown": markdown, "json": summary, "records": records}


def report_finished(jobs: list[dict], out: Path, registry, *, plots=True, suite=None, command="", pairs=(),
                    protocol=None) -> dict[str, Any]:
    """Interim tables of a sweep still running or paused: the jobs whose run file is complete
    (made by the current code) are read, the others are counted as owed; nothing is run or
    trained. Rows are labelled from all the jobs, as the final tables will label them; each row
    and table says how many of its seeds are in. Written to ``out/interim/``, never over the
    final tables, whose reader should not mistake a part for the whole."""
    from . import report, sweep

    out = Path(out)
    records = []
    for job in jobs:
        record = sweep.finished_record(job, out / "runs", registry)
        if record is None:
            record = {"job": job, "status": "owed", "file": str(sweep.run_path(out / "runs", job))}
        elif record["status"] != "failed":  # a recorded failure counts as finished, and failed
            record["series"] = sweep.scored_series(record["file"], record["summary"].get("burn_in") or 0)
        records.append(record)
    groups = by_table(records)
    for recs in groups.values():
        label_rows(recs)
    finished = [r for r in records if r["status"] != "owed"]
    tables = aggregate(finished, pairs, protocol, relabel=False)
    by_name = {t["name"]: t for t in tables}
    for recs in groups.values():
        table = by_name.get(group_name(recs[0]["job"]))
        if table is None:  # nothing finished in this table yet
            continue
        planned: dict[str, list[int]] = {}
        for r in recs:
            planned.setdefault(r["row"], []).append(r["job"]["seed"])
        for row in table["rows"]:
            row["seeds_planned"] = len(planned.get(row["method"], ()))
        table["not_started"] = [label for label in planned if label not in {row["method"] for row in table["rows"]}]
        table["scored_seeds"] = sorted({r["job"]["seed"] for r in recs})
    head = report.header(wall_seconds=0.0, suite=suite, command=command, mode="read only (--finished)")
    head["device"] = report.devices(jobs)
    head["interim"] = (f"{len(finished)} of {len(records)} runs finished; "
                       f"{len(tables)} of {len(groups)} tables have a finished run")
    head["jobs_read"] = sum(r["status"] == "skipped" for r in finished)
    head["failures_read"] = len(finished) - head["jobs_read"]
    head["seconds_by_method"] = seconds_by_method(finished)
    files = report.write_all(tables, finished, out / "interim", head, plots=plots)
    markdown, summary = _write_documents(out / "interim", tables, [r for r in finished if r["status"] == "failed"],
                                         head, files,
                                         owed=[{"job": r["job"], "file": r["file"]} for r in records if r["status"] == "owed"])
    return {"tables": tables, "markdown": markdown, "json": summary, "records": records}


def _write_documents(folder: Path, tables: list[dict], failed: list[dict], head: dict, files: list[Path],
                     **extra) -> tuple[str, dict]:
    """results.md and summary.json in ``folder`` (beside the per-table files ``files``); returns
    the markdown and the summary."""
    from . import report

    markdown = report.markdown_document(tables, failed, head)
    (folder / "results.md").write_text(markdown + "\n")
    summary = {"header": head, "tables": tables, "failed": [{k: r[k] for k in ("job", "error", "file")} for r in failed],
               **extra, "files": [str(f) for f in files + [folder / "results.md"]]}
    (folder / "summary.json").write_text(json.dumps(_clean(summary), indent=1, default=str))
    return markdown, summary


def metric_columns(summaries: list[dict]) -> list[str]:
    present = set().union(*map(set, summaries)) if summaries else set()
    cols = []
    for pattern in METRICS:
        if pattern.endswith("*"):
            stem = pattern[:-1]
            cols += sorted(k for k in present if k.startswith(stem) and k != stem.rstrip("_"))
        elif pattern in present:
            cols.append(pattern)
    return cols


def by_table(records: list[dict]) -> dict[tuple, list[dict]]:
    """Records grouped by table (model, model options, obs, imperfect-model settings), in order."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(group_key(r["job"]), []).append(r)
    return groups


def aggregate(records: list[dict], pairs=(), protocol: dict | None = None, relabel: bool = True) -> list[dict]:
    """One table per (model, model options, obs): per method, mean and 95 % interval over seeds,
    whether its scored windows are stationary and the autocorrelation-aware interval of the time
    means (from each record's ``series`` of per-cycle analysis RMSE, when present); and, for each
    requested (a, b) pair present in the table, the paired difference a - b, Holm-adjusted over
    the table's pairs. ``protocol`` (from build_jobs) adds the seeds and tuned options.
    ``relabel=False`` keeps rows labelled beforehand (an interim table labels its rows from all
    its jobs, finished or not, so that they read as the final table's will)."""
    tables = []
    for recs in by_table(records).values():
        job = recs[0]["job"]
        if relabel:
            label_rows(recs)
        for r in recs:  # run files written before the cost record: the harness forecasts every member
            if r["status"] != "failed" and "members" in r["summary"]:
                r["summary"].setdefault("forecasts_per_cycle", r["summary"]["members"])
        ok = [r["summary"] for r in recs if r["status"] != "failed"]
        cols = metric_columns(ok)
        info = (protocol or {}).get(group_name(job), {})
        rows = []
        for label in dict.fromkeys(r["row"] for r in recs):
            mine = [r for r in recs if r["row"] == label]
            sums = [r["summary"] for r in mine if r["status"] != "failed"]
            method = mine[0]["job"]["method"]
            tuned_jobs = info.get("tuned_jobs")
            row: dict[str, Any] = {"method": label, "variant_of": method, "variant": mine[0]["variant"],
                                   "seeds": len(sums), "failed": len(mine) - len(sums),
                                   "members": sums[0]["members"] if sums else None,
                                   "tuned": (tuned_jobs.get(sweep_job_hash(mine[0]["job"])) if tuned_jobs is not None
                                             else info.get("tuned", {}).get(method)),
                                   "base": sweep_job_hash(mine[0]["job"]) in info.get("base_jobs", ())}
            for c in cols:
                mean, half, _ = t_interval([s.get(c, float("nan")) for s in sums])
                row[c] = mean
                row[f"{c}_ci95"] = half
            row.update(steady_state([r for r in mine if r["status"] != "failed"]))
            rows.append(row)
        paired, matched = [], []
        if "analysis_rmse" in cols:
            _paired_with_best(rows, recs)
            cols.insert(cols.index("analysis_rmse") + 1, "rmse_minus_best")
            paired = paired_differences(recs, [p for p in (_pair_rows(rows, a, b) for a, b in pairs) if p])
            matched = equal_cost_pairs(rows, recs, pairs)
        tables.append({"name": group_name(job), "model": job["model"], "model_options": job["model_options"],
                       "obs": job["obs"], "cycles": job["cycles"],
                       "truth_options": dict(job.get("truth_options") or {}), "model_error": job.get("model_error") or "",
                       "burn_in": ok[0]["burn_in"] if ok else job.get("burn_in"), "columns": cols, "rows": rows,
                       "pairs": paired, "equal_cost_pairs": matched,
                       "scored_seeds": sorted({r["job"]["seed"] for r in recs}),
                       "tuning_seeds": sorted(info.get("tuning_seeds", ()))})
    return tables


def seconds_by_method(records: list[dict]) -> dict[str, dict[str, float]]:
    """What the suite cost, per method: the runs' own seconds (setup, prepare and cycling, as each
    run file records it, whether this invocation ran it or read it) and the training of its
    learned state, counted once per (model, method, training options) however many runs shared it."""
    out: dict[str, dict[str, float]] = {}
    trained: set = set()
    for r in records:
        if r["status"] == "failed":
            continue
        s, m = r["summary"], r["job"]["method"]
        row = out.setdefault(m, {"runs": 0, "run_seconds": 0.0, "train_seconds": 0.0})
        row["runs"] += 1
        row["run_seconds"] += float(s.get("total_seconds") or 0.0)
        key = (r["job"]["model"], json.dumps(r["job"]["model_options"], sort_keys=True), m,
               json.dumps({k: v for k, v in r["job"]["method_options"].items() if k == "preset"}, sort_keys=True))
        if s.get("train_seconds") and key not in trained:
            trained.add(key)
            row["train_seconds"] += float(s["train_seconds"])
    return out


#: What, besides a method's options, can tell two rows of one method apart in a table.
VARIANT_FIELDS = ("members", "cycles", "burn_in", "obs_std")


def label_rows(recs: list[dict]) -> None:
    """Give each record of one table its row: ``r["row"]`` (the method's name, or with several
    configurations of the method in the table, the name and the settings that tell them apart,
    e.g. 'letkf (members=6, inflation=1.1)') and ``r["variant"]`` ({setting: value} of those settings;
    empty for a method run one way). Seeds of one configuration are one row, never merged with
    another configuration's."""
    def config(job):
        return {**{k: job.get(k) for k in VARIANT_FIELDS}, **job.get("method_options", {})}

    for method in dict.fromkeys(r["job"]["method"] for r in recs):
        mine = [r for r in recs if r["job"]["method"] == method]
        configs = [config(r["job"]) for r in mine]
        keys = dict.fromkeys(k for c in configs for k in c)
        # A job holds only the options given (and the model's defaults): the rest are the method's own.
        defaults = _declared_defaults(method)
        configs = [{k: c.get(k, defaults.get(k, "default")) for k in keys} for c in configs]
        differing = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]
        for r, c in zip(mine, configs):
            r["variant"] = {k: c.get(k) for k in differing}
        # Shown plainly: 'members=1' (the method's own size), 'train_data=default', never
        # 'members=None' or 'train_data='; the raw values where that would make two rows one.
        preferred = getattr(_factory(method), "preferred_members", None)
        distinct = {json.dumps(r["variant"], sort_keys=True, default=str) for r in mine}
        for shown in (lambda k, v: _shown(k, v, preferred), lambda k, v: str(v)):
            labels = [method + (f" ({', '.join(f'{k}={shown(k, v)}' for k, v in r['variant'].items())})" if differing else "")
                      for r in mine]
            if len(set(labels)) >= len(distinct):
                break
        for r, label in zip(mine, labels):
            r["row"] = label


def _shown(key: str, value, preferred_members) -> str:
    if key == "members" and value is None and preferred_members is not None:
        return str(preferred_members)
    return "default" if value is None or value == "" else str(value)


def _factory(method: str):
    """The method's class (or factory) as registered; None for a method the registry does not know."""
    from .registry import get_registry

    entries = get_registry().assimilators
    return entries[method].factory if method in entries else None


def _declared_defaults(method: str) -> dict:
    """The option defaults a method declares ({} for a method the registry does not know)."""
    return dict(getattr(_factory(method), "defaults", {}))


def _pair_rows(rows: list[dict], a: str, b: str) -> tuple[str, str] | None:
    """A requested pair as row labels: a name is a row label, or a method with one row, or of a
    method with several rows (variants) the one at the block's own settings; the variants are
    compared at equal cost as well (equal_cost_pairs)."""
    def one(name):
        if any(r["method"] == name for r in rows):
            return name
        mine = [r for r in rows if r["variant_of"] == name]
        if len(mine) == 1:
            return mine[0]["method"]
        base = [r["method"] for r in mine if r.get("base")]
        return base[0] if len(base) == 1 else None

    ra, rb = one(a), one(b)
    return (ra, rb) if ra and rb else None


def equal_cost_pairs(rows: list[dict], recs: list[dict], pairs) -> list[dict]:
    """For each requested method pair (a, b): the row of a and the row of b whose seconds per
    cycle are closest (smallest |log ratio|), with the paired seed-by-seed difference a - b
    (Holm over this table's equal-cost pairs, as paired_differences does) and both costs."""
    chosen = []
    for a, b in pairs:
        timed = lambda m: [r for r in rows if r["variant_of"] == m and r.get("seconds_per_cycle") is not None  # noqa: E731
                           and math.isfinite(r["seconds_per_cycle"]) and r["seconds_per_cycle"] > 0]
        candidates = [(abs(math.log(ra["seconds_per_cycle"] / rb["seconds_per_cycle"])), ra, rb)
                      for ra in timed(a) for rb in timed(b)]
        if candidates:
            _, ra, rb = min(candidates, key=lambda c: c[0])
            chosen.append((ra, rb))
    out = paired_differences(recs, [(ra["method"], rb["method"]) for ra, rb in chosen])
    for pair, (ra, rb) in zip(out, chosen):
        pair["a_method"], pair["b_method"] = ra["variant_of"], rb["variant_of"]
        for side, row in (("a", ra), ("b", rb)):
            for cost in ("seconds_per_cycle", "forecasts_per_cycle", "network_calls_per_cycle"):
                pair[f"{side}_{cost}"] = row.get(cost)
    return out


def steady_state(recs: list[dict]) -> dict[str, Any]:
    """A row's stationarity and time-mean interval from its records' per-cycle series.

    Each seed's window is tested for a trend in log analysis RMSE (AR(1)-corrected); the seeds'
    p-values are pooled (Fisher) into the row's test, so a row is not flagged merely because one
    of many seeds crossed 5 % by chance. ``analysis_rmse_time_ci95`` is the 95 % half-width of
    the row's mean that the finite windows alone explain (each run's AR(1)-inflated interval,
    combined over the seeds as independent errors)."""
    tests, halves = [], []
    for r in recs:
        series = r.get("series")
        if series is None:
            continue
        tests.append(statistics.trend_test(series))
        halves.append(statistics.series_mean_interval(series)[1])
    ps = [t["p"] for t in tests if math.isfinite(t["p"])]
    if not ps:
        # No series: not tested, not claimed. Series too short or too autocorrelated for a test
        # (fewer than 3 effective values): not shown stationary, which is what the flag claims.
        return {"stationary": False if tests else None, "nonstationary_seeds": 0 if tests else None,
                "trend_p": float("nan"), "trend_relative_change": float("nan"),
                "stationary_reason": "too few independent cycles to test" if tests else None,
                "analysis_rmse_time_ci95": float("nan")}
    p = statistics.combined_p(ps)
    finite = [h for h in halves if math.isfinite(h)]
    return {"stationary": bool(p >= statistics.ALPHA), "nonstationary_seeds": sum(q < statistics.ALPHA for q in ps),
            "stationary_reason": None if p >= statistics.ALPHA else "trend",
            "trend_p": p, "trend_relative_change": t_interval([t["relative_change"] for t in tests])[0],
            "analysis_rmse_time_ci95": math.sqrt(sum(h * h for h in finite)) / len(finite) if finite else float("nan")}


def paired_differences(recs: list[dict], pairs: list[tuple[str, str]]) -> list[dict]:
    """Each pair's seed-by-seed difference a - b with its p-value; with m > 1 pairs, p-values
    are Holm-adjusted and intervals widened to the Bonferroni level 1 - 0.05/m, so that the m
    intervals hold together with 95 % confidence."""
    m = len(pairs)
    out = []
    for a, b in pairs:
        diffs = _seed_differences(recs, a, b)
        mean, half, n = t_interval(diffs, level=1 - statistics.ALPHA / max(m, 1))
        _, half_single, _ = t_interval(diffs)
        out.append({"a": a, "b": b, "analysis_rmse_diff": mean, "analysis_rmse_diff_ci95": half,
                    "analysis_rmse_diff_ci95_unadjusted": half_single, "p": statistics.t_test_p(diffs), "seeds": n})
    for pair, adjusted in zip(out, statistics.holm([p["p"] for p in out])):
        pair["p_holm"] = adjusted
        pair["family"] = m
    return out


def _paired_with_best(rows: list[dict], recs: list[dict]) -> None:
    """Add each row's seed-by-seed analysis-RMSE difference from the best row (lowest mean).

    Seeds share truth and observations across methods, so the paired interval is much tighter
    than the two methods' own intervals when the seed-to-seed spread is common to both."""
    finite = [r for r in rows if r.get("analysis_rmse") is not None and math.isfinite(r["analysis_rmse"])]
    if not finite:
        return
    best = min(finite, key=lambda r: r["analysis_rmse"])["method"]
    for row in rows:
        row["rmse_minus_best"], row["rmse_minus_best_ci95"], _ = paired_difference(recs, row["method"], best)
        row["best"] = best


def paired_difference(recs: list[dict], a: str, b: str) -> tuple[float, float, int]:
    """Mean and 95 % half-width of analysis RMSE a - b over the seeds both completed."""
    return t_interval(_seed_differences(recs, a, b))


def _seed_differences(recs: list[dict], a: str, b: str) -> list[float]:
    def per_seed(row):  # a row label (set by label_rows; the method name where it has not run)
        return {r["job"]["seed"]: r["summary"].get("analysis_rmse", float("nan")) for r in recs
                if r.get("row", r["job"]["method"]) == row and r["status"] != "failed"}

    ra, rb = per_seed(a), per_seed(b)
    return [ra[s] - rb[s] for s in sorted(set(ra) & set(rb))]


def _clean(value):
    """JSON-safe: NaN and infinities become null, paths and tuples plain values."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
