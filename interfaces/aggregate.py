"""Aggregation: finished run records into tables (interfaces.report writes them).

One table per (model, observations, ...) group and one row per method setting: means over seeds
with t intervals, the steady-state test of each scored window, paired seed-by-seed differences
(from the best row and for named pairs, Holm-adjusted), and the equal-cost pairs.
"""

from __future__ import annotations

import json
import math
from typing import Any

from . import seed_scores, statistics
from .errors import UsageError
from .grouping import group_key, group_name
from .statistics import t_interval
from .suites import COST_OPTIONS, EVERY_ROW, pair_method
from .sweep import job_hash as sweep_job_hash

#: Table columns in order; a trailing '*' stands for the per-variable scores of channel models.
METRICS = ("analysis_rmse", "analysis_rmse_*", "background_rmse", "background_rmse_*", "spread_skill",
           "crps", "crps_*", "omb_norm", "oma_norm", "omb_rms", "oma_rms", "train_seconds", "prepare_seconds",
           "seconds_per_cycle", "forecasts_per_cycle", "network_calls_per_cycle", "peak_memory_mb")

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
            label_rows(recs, protocol)
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
            row["per_seed"] = seed_scores.of_records(mine, seed_scores.kept_columns(cols))
            rows.append(row)
        paired, matched = [], []
        if "analysis_rmse" in cols:
            _paired_with_best(rows, recs)
            cols.insert(cols.index("analysis_rmse") + 1, "rmse_minus_best")
            paired = paired_differences(recs, [p for a, b in pairs for p in _pair_rows(rows, a, b)])
            matched = equal_cost_pairs(rows, recs, [(pair_method(a), pair_method(b)) for a, b in pairs])
        tables.append({"name": group_name(job), "model": job["model"], "model_options": job["model_options"],
                       "obs": job["obs"], "cycles": job["cycles"],
                       "truth_options": dict(job.get("truth_options") or {}), "model_error": job.get("model_error") or "",
                       "forecast_bias": job.get("forecast_bias") or "",
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


def label_rows(recs: list[dict], protocol: dict | None = None) -> None:
    """Give each record of one table its row: ``r["row"]`` (the method's name, or with several
    configurations of the method in the table, the name and the settings that tell them apart,
    e.g. 'letkf (members=6)') and ``r["variant"]`` ({setting: value} of those settings; empty for
    a method run one way). Seeds of one configuration are one row, never merged with another
    configuration's. Options a tuned file chose (``protocol``, from build_jobs) are left out of
    the names when the rest tells the rows apart: each configuration is tuned on its own, so the
    6- and 20-member LETKF differ in every tuned value too, and the table's notes list them."""
    def config(job):
        return {**{k: job.get(k) for k in VARIANT_FIELDS}, **job.get("method_options", {})}

    def tuned_keys(job) -> set:
        if not protocol:
            return set()
        info = protocol.get(group_name(job), {})
        return set((info.get("tuned_jobs", {}).get(sweep_job_hash(job)) or {}))

    for method in dict.fromkeys(r["job"]["method"] for r in recs):
        mine = [r for r in recs if r["job"]["method"] == method]
        configs = [config(r["job"]) for r in mine]
        keys = dict.fromkeys(k for c in configs for k in c)
        # A job holds only the options given (and the model's defaults): the rest are the method's own.
        defaults = _declared_defaults(method)
        configs = [{k: c.get(k, defaults.get(k, "default")) for k in keys} for c in configs]
        def count(names) -> int:
            """How many configurations the settings ``names`` tell apart."""
            return len({json.dumps({k: c.get(k) for k in names}, sort_keys=True, default=str) for c in configs})

        differing = [k for k in keys if count([k]) > 1]
        distinct = count(differing)
        tuned = set().union(*(tuned_keys(r["job"]) for r in mine))
        untuned = [k for k in differing if k not in tuned]
        if count(untuned) == distinct:
            differing = untuned
        for r, c in zip(mine, configs):
            r["variant"] = {k: c.get(k) for k in differing}
        # Shown plainly: 'members=1' (the method's own size), never 'members=None' or
        # 'train_data='; a setting left unset (the method's own choice) is left out of a row's name
        # ('losda (members=20, rtps=0.5)', not '..., train_data=default, train_backgrounds=default'),
        # then named 'default', then the raw values, whichever first keeps the rows apart. A
        # number is always shown ('inflation=1.0' beside 'inflation=1.1').
        preferred = getattr(_factory(method), "preferred_members", None)

        def at_default(k, v) -> bool:
            return k != "members" and (v is None or v == "" or v == "default")

        def name(r, shown, keep) -> str:
            items = [f"{k}={shown(k, v)}" for k, v in r["variant"].items() if keep(k, v)]
            return method + (f" ({', '.join(items)})" if items else "")

        for shown, keep in ((lambda k, v: _shown(k, v, preferred), lambda k, v: not at_default(k, v)),
                            (lambda k, v: _shown(k, v, preferred), lambda k, v: True),
                            (lambda k, v: str(v), lambda k, v: True)):
            labels = [name(r, shown, keep) if differing else method for r in mine]
            if len(set(labels)) >= distinct:
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


def _pair_rows(rows: list[dict], a: str, b: str) -> list[tuple[str, str]]:
    """A requested pair as row labels: a name is a row label, or a method with one row, or of a
    method with several rows (variants) the one at the block's own settings; 'method*' stands
    for each of the method's rows, one pair per row (a table whose variants ask their own
    question, e.g. a prior trained on the truth model's data). The variants are compared at
    equal cost as well (equal_cost_pairs)."""
    def one(name):
        if any(r["method"] == name for r in rows):
            return name
        mine = [r for r in rows if r["variant_of"] == name]
        if len(mine) == 1:
            return mine[0]["method"]
        block = _block_row(rows, name)
        return block["method"] if block else None

    def every(name):
        if name.endswith(EVERY_ROW):
            return [r["method"] for r in rows if r["variant_of"] == pair_method(name)]
        return [label] if (label := one(name)) else []

    return [(ra, rb) for ra in every(a) for rb in every(b) if ra != rb]


def cost_views(rows: list[dict], method: str) -> list[dict]:
    """The rows of ``method`` that show it at another cost: its block's own row and the variants
    that change at least one cost option (members, steps, ...) from it. A variant that changes
    only other settings (a prior trained on other data) asks its own question: whichever of it
    and the block's row ran faster on a loaded machine must not speak for the method at equal
    cost. Without a known block row (run files read back alone) every row counts."""
    mine = [r for r in rows if r["variant_of"] == method]
    block = _block_row(rows, method)
    if block is None:
        return mine
    return [r for r in mine if r is block or any(r["variant"].get(k) != block["variant"].get(k) for k in COST_OPTIONS)]


def _block_row(rows: list[dict], method: str) -> dict | None:
    """The row of ``method`` at its suite block's own settings (not a declared variant), or None
    when the protocol did not say which (run files read back alone) or names several."""
    base = [r for r in rows if r["variant_of"] == method and r.get("base")]
    return base[0] if len(base) == 1 else None


def equal_cost_pairs(rows: list[dict], recs: list[dict], pairs) -> list[dict]:
    """For each requested method pair (a, b): the cost views (cost_views) of a and of b whose
    seconds per cycle are closest (smallest |log ratio|), with the paired seed-by-seed
    difference a - b (Holm over this table's equal-cost pairs, as paired_differences does) and
    both costs."""
    chosen = []
    for a, b in pairs:
        timed = lambda m: [r for r in cost_views(rows, m) if r.get("seconds_per_cycle") is not None  # noqa: E731
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
    the row's mean that the finite windows alone explain (each run's AR(1)-inflated standard
    error, the AR(1) fit pooled over the seeds, combined as independent errors)."""
    tests, runs = [], []
    for r in recs:
        series = r.get("series")
        if series is None:
            continue
        tests.append(statistics.trend_test(series))
        runs.append(series)
    ps = [t["p"] for t in tests if math.isfinite(t["p"])]
    if not ps:
        # No series: not tested, not claimed. Series too short or too autocorrelated for a test
        # (fewer than 3 effective values): not shown stationary, which is what the flag claims.
        return {"stationary": False if tests else None, "nonstationary_seeds": 0 if tests else None,
                "trend_p": float("nan"), "trend_relative_change": float("nan"),
                "stationary_reason": "too few independent cycles to test" if tests else None,
                "analysis_rmse_time_ci95": float("nan")}
    p = statistics.combined_p(ps)
    _, half, _ = statistics.pooled_mean_interval(runs)
    return {"stationary": bool(p >= statistics.ALPHA), "nonstationary_seeds": sum(q < statistics.ALPHA for q in ps),
            "stationary_reason": None if p >= statistics.ALPHA else "trend",
            "trend_p": p, "trend_relative_change": t_interval([t["relative_change"] for t in tests])[0],
            "analysis_rmse_time_ci95": half}


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



def cross_table_pairs(records: list[dict], specs: list[dict]) -> list[dict]:
    """The suite's cross-table pairs (suites.cross_pairs): for each, the row of table a and the
    row of table b that its sides select, and their seed-by-seed analysis-RMSE difference a - b
    over the seeds both finished, Holm-adjusted over the cross pairs with Bonferroni-level
    intervals (one family, apart from each table's own pairs). Records must be labelled
    (``aggregate`` does it). A side whose row has not run yet gives a pair with no seeds."""
    found = []
    for spec in specs:
        rows = [_cross_row(records, spec[side]) for side in ("a", "b")]
        diffs = []
        if all(rows):
            (ta, ra), (tb, rb) = rows
            per_seed = [{r["job"]["seed"]: r["summary"].get("analysis_rmse", float("nan")) for r in records
                         if r["status"] != "failed" and group_name(r["job"]) == t and r.get("row") == row}
                        for t, row in rows]
            diffs = [per_seed[0][s] - per_seed[1][s] for s in sorted(set(per_seed[0]) & set(per_seed[1]))]
        found.append((spec, rows, diffs))
    m = len(found)
    out = []
    for spec, rows, diffs in found:
        mean, half, n = t_interval(diffs, level=1 - statistics.ALPHA / max(m, 1))
        _, half_single, _ = t_interval(diffs)
        out.append({"a": _cross_label(spec["a"], rows[0]), "b": _cross_label(spec["b"], rows[1]),
                    "why": spec.get("why", ""), "analysis_rmse_diff": mean, "analysis_rmse_diff_ci95": half,
                    "analysis_rmse_diff_ci95_unadjusted": half_single, "p": statistics.t_test_p(diffs), "seeds": n})
    for pair, adjusted in zip(out, statistics.holm([p["p"] for p in out])):
        pair["p_holm"], pair["family"] = adjusted, m
    return out


def _cross_row(records: list[dict], side: dict) -> tuple[str, str] | None:
    """(table, row label) of the one row of ``side['table']`` run by ``side['method']`` with
    ``side['options']`` among its method options (and ``members``, or the exact ``row`` label,
    when given); None when no
    such row has a record; an error naming the rows when several match."""
    want = dict(side.get("options") or {})
    labels = {r["row"] for r in records
              if group_name(r["job"]) == side["table"] and r["job"]["method"] == side["method"]
              and r.get("row") == side.get("row", r.get("row"))
              and all(r["job"].get("method_options", {}).get(k) == v for k, v in want.items())
              and ("members" not in side or r["job"].get("members") == side["members"]) and r.get("row")}
    if len(labels) > 1:
        raise UsageError(f"cross_pairs: {side['method']} {want or ''} matches several rows of {side['table']} "
                         f"({'; '.join(sorted(labels))}): give the options (or members) that tell them apart")
    return (side["table"], labels.pop()) if labels else None


def _cross_label(side: dict, row: tuple[str, str] | None) -> str:
    return f"{side['table']}: {row[1] if row else side['method'] + ' (not run yet)'}"
