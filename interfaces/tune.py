"""`da-harness tune`: choose a method's options on held-out tuning seeds.

Each setting of the named options (a grid, or coordinate descent over the same value lists) is
run on every tuning seed through the sweep machinery (run files named by job hash, so a rerun
reads finished settings), scored by the mean over seeds of the steady-state analysis RMSE (the
cycles after burn-in), and the lowest finite score wins. With ``--tolerance``, a cheaper setting
(smaller product of the cost options: reverse steps, samples, members, iterations) wins instead
when its score is within that relative margin of the lowest: the by-hand tuner's "no more steps
than the accuracy needs", applied to every method alike. With ``--calibrate`` (an ensemble's
spread control), among the settings of least cost within that margin the one whose spread-skill
(mean over the tuning seeds) is nearest 1 wins: calibration never costs more than the margin. The chosen values and the whole search
go to a tuned-options file (interfaces/tuned.py) that suite blocks apply with ``tuned = "..."``.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from argparse import Namespace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import aggregate, compare, report, suites, sweep, tuned
from .errors import UsageError
from .grouping import group_name
from .options import parse_assignments
from .registry import get_registry, instantiate_method
from .statistics import t_interval
from .suites import COST_OPTIONS


def add_tune_parser(sub) -> None:
    p = sub.add_parser("tune", help="choose a method's options on held-out tuning seeds")
    p.add_argument("--method", required=True, help="the method to tune")
    p.add_argument("--model", default="lorenz96", help="testbed (default lorenz96)")
    p.add_argument("--obs", default="all", help="one observation network (default all)")
    p.add_argument("--obs-std", default=None, help="observation-error std")
    p.add_argument("--seeds", required=True, metavar="S1,S2,...", help="tuning seeds (no table may score them)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a method option and the values to try (repeatable)")
    p.add_argument("--descent", action="store_true",
                   help="coordinate descent over the --grid values (from each list's first value) instead of the full grid")
    p.add_argument("--rounds", type=int, default=3, help="most coordinate-descent rounds (default 3)")
    p.add_argument("--extend-edges", type=int, default=0, metavar="K",
                   help="with --descent: when a numeric option's choice is the smallest or largest value of its "
                        "list, add one value beyond it and descend again; each option's list grows at most K "
                        "times (default 0: never)")
    p.add_argument("--tolerance", type=float, default=0.0, metavar="REL",
                   help="choose the cheapest setting (smallest product of the --cost-options' values) whose score "
                        "is within REL of the lowest, relative (0.01 = 1 %%); default 0: the lowest score")
    p.add_argument("--calibrate", action="store_true",
                   help="among the cheapest settings within --tolerance of the lowest score, choose the one whose "
                        "spread-skill (mean over the seeds) is nearest 1 (an ensemble's spread control: RTPS, "
                        "inflation); needs --tolerance and an ensemble (--members above 1)")
    p.add_argument("--cost-options", default=",".join(COST_OPTIONS), metavar="K1,K2,...",
                   help=f"options whose value a run's cost grows with (default {','.join(COST_OPTIONS)})")
    p.add_argument("--cycles", type=int, default=100, help="cycles per run, burn-in included (default 100)")
    p.add_argument("--burn-in", type=int, default=None, help="cycles left out of the score")
    p.add_argument("--members", type=int, default=None, help="ensemble size")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="fixed model or method option (repeatable)")
    from .model_error import add_truth_args

    add_truth_args(p)
    p.add_argument("--suite", default=None, help="refuse tuning seeds that this suite scores; default --out from its name")
    p.add_argument("--out", default=None, help="tuned-options file to update (default benchmarks/tuned/<suite>.toml, "
                                                "or runs/tune/tuned.toml without --suite)")
    p.add_argument("--runs", default=None, help="folder for the run files (default runs/tune/<table>-<method>)")
    p.add_argument("--serial", action="store_true", help="run the jobs one after another in this process")
    p.add_argument("--retry-failed", action="store_true",
                   help="run again the settings whose failure (a divergence) an earlier search recorded; by default "
                        "they are read back as failed while the code is unchanged")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    p.add_argument("--cache-dir", default=None, help="where climatologies and checkpoints are cached")
    compare.add_device_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true", help="print the tuned entry as JSON")


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """['zeta=0.5,1', 'steps=10'] -> {'zeta': ['0.5', '1'], 'steps': ['10']}."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not vals:
            raise UsageError(f"--grid needs KEY=V1,V2,... items, got '{item}'")
        if key.strip() in grid:
            raise UsageError(f"--grid names option '{key.strip()}' twice")
        grid[key.strip()] = vals
    if not grid:
        raise UsageError("tune needs at least one --grid KEY=V1,V2,...")
    return grid


def suite_scoring_seeds(suite: dict, model: str) -> dict[int, list[str]]:
    """{seed: [blocks scoring it]} over the suite's blocks on ``model``."""
    scored: dict[int, list[str]] = {}
    for block in suite["experiments"]:
        b = suites._merge(suite.get("defaults", {}), block)
        if b["model"] != model:
            continue
        where = f"{b['model']} {b.get('model_options', {}).get('resolution', '')}".strip()
        for s in suites.block_seeds(b, suite)[0]:
            scored.setdefault(s, []).append(where)
    return scored


def cmd_tune(args, registry) -> int:
    started = time.perf_counter()
    seeds = suites.parse_seeds(args.seeds, "--seeds", count_ok=False)
    grid = parse_grid(args.grid)
    registry.assimilator(args.method)  # unknown method: one line naming the valid ones
    suite = suites.load_suite(args.suite) if args.suite else None
    if suite is not None:
        scored = suite_scoring_seeds(suite, args.model)
        both = sorted(set(seeds) & set(scored))
        if both:
            raise UsageError(f"tuning seeds {', '.join(map(str, both))} are scoring seeds of suite '{suite['name']}' "
                             f"({', '.join(sorted({w for s in both for w in scored[s]}))}); tune on held-out seeds")
    if args.rounds < 1:
        raise UsageError(f"--rounds must be a positive integer, got {args.rounds}")
    if not (0 <= args.tolerance < 1):
        raise UsageError(f"--tolerance must be a relative margin in [0, 1), got {args.tolerance}")
    if getattr(args, "calibrate", False) and not (args.tolerance and (args.members or 0) > 1):
        raise UsageError("--calibrate chooses among the settings within --tolerance of the lowest score by their "
                         "spread-skill: it needs --tolerance and --members above 1")
    if args.extend_edges < 0 or (args.extend_edges and not args.descent):
        raise UsageError(f"--extend-edges must be a non-negative integer and needs --descent, got {args.extend_edges}")
    search = Search(args, registry, grid, seeds)
    entry = search.run()
    out = Path(args.out or (f"benchmarks/tuned/{suite['name']}.toml" if suite else "runs/tune/tuned.toml"))
    entry.update(suite=suite["name"] if suite else None, command=command_line(args),
                 commit=_commit(), date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 wall_seconds=round(time.perf_counter() - started, 1),
                 # What the search cost, read from its run files: a rerun that finds them all
                 # finished takes seconds of wall time, but the choice still cost this much.
                 run_seconds=round(sum(r["run_seconds"] for r in entry["search"]), 3))
    # A search read back whole ran nothing: the entry keeps the commit, date and wall time of the
    # invocation that ran it, even when figures derived from the runs (e.g. a time interval whose
    # formula improved since) are written anew.
    written = tuned.upsert(out, entry, keep_provenance=search.computed == 0)
    if args.json:
        print(json.dumps(compare._clean({**entry, "file": str(out), "unchanged": not written})))
    else:
        print(search_table(entry) + (f"\n\nWritten to {out}." if written else
                                     f"\n\n{out} already holds this search and choice; left as it was."))
    return 0


def command_line(args) -> str:
    """The command that reproduces this search, rebuilt from the parsed arguments."""
    import shlex

    parts = ["da-harness", "tune", "--method", args.method, "--model", args.model, "--obs", args.obs,
             "--seeds", ",".join(map(str, suites.parse_seeds(args.seeds, "--seeds", count_ok=False))),
             "--cycles", str(args.cycles)]
    for flag, value in (("--burn-in", args.burn_in), ("--members", args.members), ("--obs-std", args.obs_std),
                        ("--suite", args.suite)):
        if value is not None:
            parts += [flag, str(value)]
    for item in args.grid:
        parts += ["--grid", item]
    for item in args.options:
        parts += ["--set", item]
    for item in args.truth_options:
        parts += ["--truth-set", item]
    if args.model_error is not None:
        parts += ["--model-error", args.model_error]
    if getattr(args, "forecast_bias", None) is not None:
        parts += ["--forecast-bias", args.forecast_bias]
    if getattr(args, "device", "cpu") != "cpu":
        parts += ["--device", args.device]
    if args.descent:
        parts += ["--descent", "--rounds", str(args.rounds)]
    if args.extend_edges:
        parts += ["--extend-edges", str(args.extend_edges)]
    if args.tolerance:
        parts += ["--tolerance", f"{args.tolerance:g}"]
        if args.cost_options != ",".join(COST_OPTIONS):
            parts += ["--cost-options", args.cost_options]
    if getattr(args, "calibrate", False):
        parts += ["--calibrate"]
    return shlex.join(parts)


def _commit() -> str:
    from .provenance import code_commit

    return code_commit()


class Search:
    """Runs settings of the grid's options on the tuning seeds and keeps every score."""

    def __init__(self, args, registry, grid: dict[str, list[str]], seeds: list[int]):
        self.args, self.registry, self.grid, self.seeds = args, registry, grid, seeds
        self.fixed = parse_assignments(args.options)
        first = self.jobs(tuple(v[0] for v in grid.values()))[0]
        self.table = group_name(first)
        self.members = first["members"]
        self.run_dir = Path(args.runs or f"runs/tune/{self.table}-{args.method}") / "runs"
        self.scores: dict[tuple, dict[str, Any]] = {}  # setting -> its search record, in the order tried
        self.computed = 0  # runs this invocation made (or that failed now), not read back from their files
        self.extended: dict[str, list[str]] = {}  # option -> values added beyond its list's edge
        names = getattr(args, "cost_options", ",".join(COST_OPTIONS))
        self.cost_keys = [k for k in (n.strip() for n in names.split(",")) if k in grid]
        self.tolerance = float(getattr(args, "tolerance", 0.0) or 0.0)
        self.calibrate = bool(getattr(args, "calibrate", False))
        for k in self.cost_keys:
            try:
                [float(v) for v in grid[k]]
            except ValueError:
                raise UsageError(f"cost option '{k}' needs numeric --grid values, got {','.join(grid[k])}") from None

    def cost(self, setting: tuple[str, ...]) -> float:
        """The cost proxy of a setting: the product of its cost options' values (1 without any)."""
        keys = list(self.grid)
        return math.prod(abs(float(setting[keys.index(k)])) for k in self.cost_keys)

    def pick(self, settings: list[tuple[str, ...]]) -> tuple[str, ...]:
        """The lowest-scoring of ``settings`` (all with finite scores); with a tolerance, the
        cheapest whose score is within it of the lowest, ties going to the lower score, or with
        --calibrate to the spread-skill nearest 1 (by ratio: 0.8 and 1.25 are equally far)."""
        lowest = min(self.scores[s]["score"] for s in settings)
        near = [s for s in settings if self.scores[s]["score"] <= lowest * (1 + self.tolerance)]

        def miscalibration(s) -> float:
            ratio = self.scores[s].get("spread_skill")
            return abs(math.log(ratio)) if ratio is not None and math.isfinite(ratio) and ratio > 0 else math.inf

        if self.calibrate:
            return min(near, key=lambda s: (self.cost(s), miscalibration(s), self.scores[s]["score"]))
        return min(near, key=lambda s: (self.cost(s), self.scores[s]["score"]))

    def jobs(self, setting: tuple[str, ...]) -> list[dict]:
        """The sweep jobs of one setting (one per tuning seed), built as compare builds them."""
        a = self.args
        given = [f"{k}={v}" for k, v in self.fixed.items()] + [f"{a.method}.{k}={v}" for k, v in zip(self.grid, setting)]
        ns = Namespace(options=given, methods=a.method, model=a.model, obs=[a.obs], obs_std=a.obs_std,
                       seeds=list(self.seeds), cycles=a.cycles, burn_in=a.burn_in, members=a.members,
                       truth_options=a.truth_options, model_error=a.model_error,
                       forecast_bias=getattr(a, "forecast_bias", None), device=getattr(a, "device", "cpu"),
                       # The one method tuned gets --members even if it prefers one (losda, dps ensembles).
                       members_for_every_method=True)
        return suites.build_jobs(ns, None, self.registry)

    def evaluate(self, settings: list[tuple[str, ...]], bar) -> None:
        """Run the settings not scored yet (all their seeds in one sweep) and score them."""
        todo = [s for s in dict.fromkeys(settings) if s not in self.scores]
        if not todo:
            return
        jobs = {s: self.jobs(s) for s in todo}
        flat = [j for s in todo for j in jobs[s]]
        log = (lambda line: bar.update(1 / len(self.seeds))) if bar is not None else (lambda line: None)
        a = self.args
        retry = getattr(a, "retry_failed", False)
        if not a.serial:
            sweep.warm_up(sweep.pending(flat, self.run_dir, self.registry, retry), self.registry, a.cache_dir,
                          lambda line: print(line, file=sys.stderr) if not a.no_progress else None)
        records = sweep.run_jobs(flat, self.run_dir, mode="serial" if a.serial else "dask", workers=a.workers,
                                 scheduler=a.scheduler, cache_dir=a.cache_dir, registry=self.registry if a.serial else None,
                                 log=log, retry_failed=retry)
        self.computed += sum(r["status"] != "skipped" and not r.get("recorded") for r in records)
        by_hash = {r["hash"]: r for r in records}
        for s in todo:
            self.scores[s] = self.score(s, [by_hash[sweep.job_hash(j)] for j in jobs[s]])

    def score(self, setting: tuple[str, ...], records: list[dict]) -> dict[str, Any]:
        ok = [r for r in records if r["status"] != "failed"]
        for r in ok:
            r["series"] = sweep.scored_series(r["file"], r["summary"].get("burn_in") or 0)
        mean, half, n = t_interval([r["summary"].get("analysis_rmse", float("nan")) for r in ok])
        steady = aggregate.steady_state(ok)
        failed = [r["error"] for r in records if r["status"] == "failed"]
        if len(ok) < len(records):  # a setting that failed on a seed cannot win
            mean = float("nan")
        typed = {k: records[0]["job"]["method_options"][k] for k in self.grid}
        # Cycling seconds (per cycle x cycles, which a resumed run keeps whole), over the seeds.
        seconds = sum(float(r["summary"].get("seconds_per_cycle") or 0.0) * int(r["summary"].get("cycles") or 0)
                      for r in ok)
        record = {"options": typed, "score": mean, "score_ci95": half, "seeds": n, "run_seconds": round(seconds, 3),
                  "time_ci95": steady["analysis_rmse_time_ci95"], "stationary": steady["stationary"],
                  "error": failed[0] if failed else None}
        if self.calibrate:  # only then: the entries of searches without it stay as they were written
            ratios = [float(r["summary"].get("spread_skill", float("nan"))) for r in ok]
            record["spread_skill"] = (sum(ratios) / len(ratios)
                                      if ratios and len(ok) == len(records) and all(map(math.isfinite, ratios))
                                      else float("nan"))
        return record

    def run(self) -> dict[str, Any]:
        from tqdm import tqdm

        a = self.args
        values = list(self.grid.values())
        total = math.prod(map(len, values)) if not a.descent else None
        bar = tqdm(total=total, desc=f"tune {a.method} on {self.table}", unit="setting", file=sys.stderr,
                   disable=a.no_progress or None, leave=False)
        try:
            if a.descent:
                self.descend(bar)
            else:
                self.evaluate(list(itertools.product(*values)), bar)
        finally:
            bar.close()
        finite = {s: r for s, r in self.scores.items() if math.isfinite(r["score"])}
        if not finite:
            errors = {r["error"] for r in self.scores.values() if r["error"]}
            raise UsageError(f"tune: no setting of {', '.join(self.grid)} gave a finite score"
                             + (f" (first error: {sorted(errors)[0]})" if errors else ""))
        lowest = min(finite, key=lambda s: finite[s]["score"])
        best = self.pick(list(finite))
        job = self.jobs(best)[0]
        return {"table": self.table, "method": a.method, "model": job["model"], "model_options": job["model_options"],
                "obs": job["obs"], "obs_std": job.get("obs_std"), "members": self.members, "seeds": self.seeds,
                # The burn-in the runs used: the model's default when none was given.
                "cycles": job["cycles"], "burn_in": job["burn_in"] if job.get("burn_in") is not None
                else get_registry().model(job["model"]).factory.default_burn_in(job["cycles"]),
                "strategy": "descent" if a.descent else "grid",
                "chosen": self.scores[best]["options"], "score": self.scores[best]["score"],
                "score_ci95": self.scores[best]["score_ci95"],
                # What --tolerance traded: the lowest score found, where it differs from the choice.
                "tolerance": self.tolerance or None, "cost_options": self.cost_keys or None,
                **({"calibrate": True} if self.calibrate else {}),
                "lowest": None if best == lowest else {"options": self.scores[lowest]["options"],
                                                        "score": self.scores[lowest]["score"]},
                "fixed": {k: v for k, v in job["method_options"].items() if k in self.fixed},
                "extended": {k: [float(x) for x in v] for k, v in self.extended.items()} or None,
                # A choice at the edge of its list: the reader should know the search stopped there.
                "at_edge": self.at_edge(best),
                "search": list(self.scores.values())}

    def descend(self, bar) -> None:
        """Coordinate descent: from each list's first value, move one option at a time to its
        best value with the others held, until a round changes nothing. With --extend-edges K, a
        choice at the edge of a numeric list grows the list by one value beyond it and the
        descent goes on from there (a by-hand tuner's "the optimum may lie outside the grid"),
        until no choice is at an edge that may still grow: each option's list grows at most K
        times. The budget is per option, so an option that reaches its edge only after another
        one's growth is still followed (the 6-member LETKF's additive inflation reached 0.2, its
        list's edge, after inflation had grown twice)."""
        current = self._descend_from(tuple(v[0] for v in self.grid.values()), bar)
        while self._extend_edges(current):
            current = self._descend_from(current, bar)

    def _descend_from(self, current: tuple[str, ...], bar) -> tuple[str, ...]:
        keys = list(self.grid)
        for _ in range(self.args.rounds):
            start = current
            for i, key in enumerate(keys):
                trials = [current[:i] + (v,) + current[i + 1:] for v in self.grid[key]]
                self.evaluate(trials, bar)
                finite = [t for t in trials if math.isfinite(self.scores[t]["score"])]
                if finite:
                    current = self.pick(finite)
            if current == start:
                break
        return current

    def _extend_edges(self, current: tuple[str, ...]) -> bool:
        """Add one value beyond the edge for each option chosen at an edge whose list has grown
        fewer than --extend-edges times; False if none grew."""
        grown = False
        for i, key in enumerate(self.grid):
            if len(self.extended.get(key, [])) >= self.args.extend_edges:
                continue
            new = self._beyond_edge(current, i)
            if new is None:
                continue
            self.grid[key].append(new)
            self.extended.setdefault(key, []).append(new)
            grown = True
        return grown

    def _beyond_edge(self, setting: tuple[str, ...], i: int) -> str | None:
        """The value one step past the edge that option ``i`` of ``setting`` sits at, not in its
        list yet, or None: an interior or non-numeric choice, or a value the method refuses (rtps
        above 1, a negative radius: a natural bound, not a grid's edge)."""
        values = self.grid[list(self.grid)[i]]
        new = edge_extension(values, setting[i])
        if new is None or new in values:
            return None
        # build_jobs types the options but does not range-check them: the method's own
        # constructor does, as the run would.
        job = self.jobs(setting[:i] + (new,) + setting[i + 1:])[0]
        try:
            instantiate_method(self.registry, self.args.method, job["method_options"], model=job["model"])
        except UsageError:
            return None
        return new

    def at_edge(self, setting: tuple[str, ...]) -> dict[str, str] | None:
        """{option: 'lower' | 'upper'} for each choice at the edge of its searched list that the
        search could have gone past (the optimum may lie beyond it), or None."""
        edges = {}
        for i, key in enumerate(self.grid):
            new = self._beyond_edge(setting, i)
            if new is not None:
                edges[key] = "lower" if float(new) < float(setting[i]) else "upper"
        return edges or None


def edge_extension(values: list[str], chosen: str) -> str | None:
    """The value one step beyond ``chosen`` when it is the smallest or largest number of
    ``values``: a geometric step (edge^2 / neighbour) between positive values, an arithmetic one
    otherwise, rounded for integer lists. None for a non-numeric option, a one-value list or an
    interior choice."""
    try:
        numbers = sorted({float(v) for v in values})
        c = float(chosen)
    except ValueError:
        return None
    if len(numbers) < 2 or numbers[0] < c < numbers[-1]:
        return None
    edge, neighbour = (numbers[-1], numbers[-2]) if c == numbers[-1] else (numbers[0], numbers[1])
    new = edge * edge / neighbour if edge > 0 and neighbour > 0 else 2 * edge - neighbour
    if all(v.strip().lstrip("-").isdigit() for v in values):
        new = round(new)
        return None if new == edge else str(new)
    return f"{new:.6g}"


def _stationary_text(s: dict) -> str:
    """A search row's stationarity as the tables write it. steady_state leaves the time interval
    nan exactly when no seed's window could be tested (too few independent cycles), so a False
    flag without a finite interval is 'untestable', not a trend (entries store no reason)."""
    if s["stationary"] is None:
        return "–"
    if s["stationary"]:
        return "yes"
    finite = s.get("time_ci95") is not None and math.isfinite(s["time_ci95"])
    return "**no**" if finite else report.UNTESTABLE


def search_table(entry: dict) -> str:
    keys = list(entry["chosen"])
    calibrated = bool(entry.get("calibrate"))
    extra = ["spread/skill"] if calibrated else []
    lines = [f"# tune {entry['method']} on {entry['table']} (seeds {', '.join(map(str, entry['seeds']))}, "
             f"{entry['cycles']} cycles, {entry['burn_in']} burn-in)", "",
             "| " + " | ".join([*keys, "RMSE a (seeds)", "± time (AR1)", "stationary", *extra, ""]) + " |",
             "|" + "|".join(["---:"] * (len(keys) + 3 + len(extra)) + ["---"]) + "|"]
    untestable = False
    for s in entry["search"]:
        chosen = s["options"] == entry["chosen"]
        score = "failed: " + s["error"] if s.get("error") else f"{s['score']:.4g}" + (
            f" ± {s['score_ci95']:.2g}" if math.isfinite(s["score_ci95"]) else "")
        time_ci = f"± {s['time_ci95']:.2g}" if s["time_ci95"] is not None and math.isfinite(s["time_ci95"]) else "–"
        stationary = _stationary_text(s)
        untestable |= stationary == report.UNTESTABLE
        lowest = entry.get("lowest") and s["options"] == entry["lowest"]["options"]
        ratio = s.get("spread_skill")
        shown = ([f"{ratio:.3g}" if ratio is not None and math.isfinite(ratio) else "–"] if calibrated else [])
        lines.append("| " + " | ".join([*(str(s["options"][k]) for k in keys), score, time_ci, stationary, *shown,
                                        "chosen" if chosen else "lowest" if lowest else ""]) + " |")
    if untestable:
        lines += ["", f"{report.UNTESTABLE}: {report.UNTESTABLE_WHY}; not a trend found."]
    if entry.get("at_edge"):
        grown = entry.get("extended") or {}
        parts = [f"{k} {entry['chosen'][k]} ({side}; its list grew {len(grown.get(k, []))} time(s))"
                 for k, side in entry["at_edge"].items()]
        lines += ["", f"At the edge of the search: {'; '.join(parts)}. The optimum may lie beyond it "
                      "(--extend-edges K grows each list at most K times)."]
    if entry.get("lowest"):
        margin = entry["score"] / entry["lowest"]["score"] - 1
        cost = f" (product of {', '.join(entry['cost_options'])})" if entry.get("cost_options") else ""
        lines += ["", f"Chosen: the cheapest setting{cost} within {entry['tolerance']:.0%} of the lowest score"
                      + (", of those the spread-skill nearest 1" if calibrated else "")
                      + f"; it is {margin:.1%} above it."]
    return "\n".join(lines)
