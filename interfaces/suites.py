"""Suites and jobs: from a suite file (or the command line) to the list of sweep jobs.

A suite (benchmarks/suites/*.toml) declares blocks of experiments, their scoring and tuning
seeds, variants and tuned-options files; ``build_jobs`` expands them, with ``--set`` options
routed to the model or the method that declares them and typed as their defaults, into plain
job dicts (interfaces.sweep) whose hash names their run file. Checks that need the whole
suite (scoring seeds that overlap tuning seeds, unknown names) are made here, before any work.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from . import tuned
from .errors import UsageError, unknown_name
from .grouping import group_name
from .options import parse_assignments, resolve

SUITE_DIRS = (Path(__file__).resolve().parent.parent / "benchmarks" / "suites", Path("benchmarks") / "suites")

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
    --truth-set / --model-error replace the block's; ``forecast_bias`` (or --forecast-bias) too,
    written canonically. Empty for a perfect-model twin, whose jobs (and hashes) stay as they were."""
    from . import forecast_bias
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
    bias = getattr(args, "forecast_bias", None)
    bias = (block.get("forecast_bias") or "" if bias is None else bias).strip()
    if bias and bias != "none":
        out["forecast_bias"] = forecast_bias.canonical(bias, registry.model(model).factory.defaults)
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
    chosen = dict(entry["chosen"])
    base = tuned.find(entries, table, method, None)
    if tuned.tuned_size(entry) is not None and base is not None and tuned.tuned_size(base) is None:
        # An ensemble of a method tuned once for every size (the latent methods) searched only
        # its own options (rerun_full's ensemble_grids) with the one-member choice held fixed.
        chosen = {**base["chosen"], **chosen}
    return {k: v for k, v in chosen.items() if k not in cli}


def _typed(model_opts: dict, method_opts: dict[str, dict], model: str, registry) -> tuple[dict, dict]:
    """`--set` strings converted to the types of the declared defaults, as suite files give them,
    so a job's hash does not depend on where an option came from."""
    def convert(defaults, given, owner):
        return {k: v for k, v in resolve(defaults, given, owner).items() if k in given}

    model_typed = convert(registry.model(model).factory.defaults, model_opts, f"model '{model}'")
    return model_typed, {m: convert(getattr(registry.assimilator(m).factory, "defaults", {}), o, f"method '{m}'")
                         for m, o in method_opts.items()}


def check_device(device: str) -> str:
    """``device`` if this machine has it, else one line naming the valid ones (before any work;
    the harness checks again in each job)."""
    import torch

    if device == "cpu" or (device.startswith("cuda") and torch.cuda.is_available()):
        return device
    raise UsageError(f"--device {device} is not available here; valid devices: cpu" + (", cuda" if torch.cuda.is_available() else ""))


#: After a method's name in a pair ('losda*:letkf'): every row of the method, variants included.
EVERY_ROW = "*"

#: Options a run's cost grows with, in proportion: what tune's --tolerance trades accuracy
#: against, and what makes a variant row a cost view of its method (aggregate.equal_cost_pairs).
COST_OPTIONS = ("steps", "samples", "members", "iterations", "iters")


def pair_method(name: str) -> str:
    """The method a pair's side names ('losda*' and 'losda' both name losda)."""
    return name.removesuffix(EVERY_ROW)


def parse_pairs(items: str | list[str], methods: set[str] | None) -> list[tuple[str, str]]:
    """'losda:dps,losda:3dvar' (or a suite's list of such items) -> [('losda', 'dps'),
    ('losda', '3dvar')], names checked against the compared methods (when given). 'losda*'
    pairs each row of the method (its variants too) rather than its own row alone."""
    pairs = []
    for item in _as_list(items):
        a, sep, b = item.partition(":")
        if not sep or not a or not b or a == b:
            raise UsageError(f"--pairs needs METHOD:OTHER items separated by commas, got '{item}'")
        for name in (pair_method(a), pair_method(b)) if methods is not None else ():
            if name not in methods:
                raise UsageError(f"--pairs names method '{name}', which is not compared; compared: {', '.join(sorted(methods))}")
        pairs.append((a, b))
    return pairs


#: A block's settings that make its tables an imperfect-model twin (part of their names).
IMPERFECT_KEYS = ("truth_options", "model_error", "forecast_bias")

#: What two tables must share for their rows to pair seed by seed: the same truths (model,
#: truth model, model error) and the same observations, over the same scored window.
SHARED_TRUTH = ("model", "model_options", "obs", "obs_std", "truth_options", "model_error", "cycles", "burn_in")


def cross_pairs(suite: dict | None, jobs: list[dict]) -> list[dict]:
    """A suite's ``[[cross_pairs]]``: rows of two tables whose seeds share truth and observations
    (e.g. a prior trained on reanalysis-like data in one table, the LETKF given the same data as
    a forecast-bias correction in another). Each side is {table, method, options (a subset of
    the row's method options), members}. Pairs whose tables this run leaves out (--tables,
    --methods) are dropped; a side naming no table of the suite, or two tables whose truths
    differ, is an error now, before anything runs."""
    from .grouping import group_name

    specs = list((suite or {}).get("cross_pairs", []))
    by_table: dict[str, dict] = {}
    for job in jobs:
        by_table.setdefault(group_name(job), job)
    known = set(by_table) | set(_suite_table_names(suite)) if suite else set(by_table)
    kept = []
    for i, spec in enumerate(specs):
        sides = [spec.get("a"), spec.get("b")]
        for side in sides:
            if not isinstance(side, dict) or not side.get("table") or not side.get("method"):
                raise UsageError(f"cross_pairs item {i + 1}: a and b each need a table and a method, got {spec}")
            if side["table"] not in known:
                raise UsageError(f"cross_pairs item {i + 1}: no table '{side['table']}' in the suite; "
                                 f"tables: {', '.join(sorted(known))}")
        if not all(s["table"] in by_table and any(j["method"] == s["method"] for j in jobs if group_name(j) == s["table"])
                   for s in sides):
            continue
        a, b = (by_table[s["table"]] for s in sides)
        differ = [k for k in SHARED_TRUTH if (a.get(k) or None) != (b.get(k) or None)]
        if differ:
            raise UsageError(f"cross_pairs item {i + 1}: tables '{sides[0]['table']}' and '{sides[1]['table']}' do not "
                             f"share their truths and observations ({', '.join(differ)} differ)")
        kept.append({"a": sides[0], "b": sides[1], "why": spec.get("why", "")})
    return kept


def suite_tables(suite: dict) -> list[tuple[str, str, dict, dict]]:
    """Each table of a suite as (name as compare gives it, obs, imperfect-model settings, block
    with the suite's defaults merged in), in suite order."""
    from .grouping import group_name

    found = []
    for raw in suite.get("experiments", []):
        block = _merge(suite.get("defaults", {}), raw)
        imperfect = {k: block[k] for k in IMPERFECT_KEYS if block.get(k)}
        for obs in _as_list(block.get("obs", [])):
            name = group_name({"model": block.get("model", "lorenz96"),
                               "model_options": block.get("model_options", {}), "obs": obs, **imperfect})
            found.append((name, obs, imperfect, block))
    return found


def _suite_table_names(suite: dict) -> list[str]:
    return [name for name, *_ in suite_tables(suite)]
