"""Comparison tables (markdown, CSV, netCDF) and plots (RMSE per cycle, maps of one cycle).

Tables come from interfaces.aggregate.aggregate: per method, the mean over seeds of each score
and the half-width of its 95 % t-interval. The maps read full run files (not slim archived
copies, which keep only the per-cycle scores), of the lowest seed every method has.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import seed_scores
from .archive import has_fields
from .grouping import group_name
from .provenance import code_commit

LABELS = {
    "analysis_rmse": "RMSE a", "rmse_minus_best": "RMSE a − best (paired)", "background_rmse": "RMSE b", "spread_skill": "spread/skill",
    "crps": "CRPS", "omb_norm": "O-B/σo rms", "oma_norm": "O-A/σo rms", "omb_rms": "O-B rms", "oma_rms": "O-A rms", "train_seconds": "train s",
    "prepare_seconds": "prepare s", "seconds_per_cycle": "s/cycle", "forecasts_per_cycle": "forecasts/cycle",
    "network_calls_per_cycle": "net calls/cycle", "peak_memory_mb": "peak MB",
}
#: Columns shown without an interval: costs depend on the machine's load, not on the seed.
COSTS = ("train_seconds", "prepare_seconds", "seconds_per_cycle", "forecasts_per_cycle", "network_calls_per_cycle",
         "peak_memory_mb")


def label(col: str) -> str:
    if col in LABELS:
        return LABELS[col]
    for stem in ("analysis_rmse", "background_rmse", "crps"):
        if col.startswith(stem + "_"):
            return f"{LABELS[stem]} {col[len(stem) + 1:]}"
    return col


# --- provenance -----------------------------------------------------------------------------
def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _relative(path: str) -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return path


def header(wall_seconds: float, suite: dict | None, mode: str, command: str = "") -> dict[str, Any]:
    import torch

    return {
        "command": command, "suite": _relative(suite["path"]) if suite else "",
        "commit": code_commit(),
        "machine": f"{platform.node()}: {_cpu()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "software": f"python {platform.python_version()}, torch {torch.__version__}",
        "run_mode": mode, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": wall_seconds,
    }


def devices(jobs) -> str:
    """Where the methods of these jobs computed: 'cpu', or e.g. 'cuda (NVIDIA H100 80GB HBM3)'."""
    names = sorted({j.get("device", "cpu") for j in jobs})
    text = ", ".join(names) or "cpu"
    if any(n.startswith("cuda") for n in names):
        import torch

        if torch.cuda.is_available():
            text += f" ({torch.cuda.get_device_name()})"
    return text


# --- tables ---------------------------------------------------------------------------------
def _fmt(value, half=None, cost=False) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if cost:
        if 0 < value < 0.01:
            return "<0.01"
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    text = _sig(value, 3)
    if half is not None and math.isfinite(half):
        text += f" ± {_sig(half, 2)}"
    return text


def _reuse_note(head: dict) -> str:
    """Says when the wall time covers only part of the table: a rerun reads finished run files."""
    read = head.get("jobs_read", 0)
    if not read and not head.get("failures_read"):
        return ""
    unversioned = head.get("jobs_read_unversioned", 0)
    stale = (f" ({unversioned} of them predate code versions, so the code that made them is unknown: "
             "delete them to rerun)") if unversioned else ""
    known = head.get("failures_read", 0)
    failed = (f", and {known} failure(s) recorded by an earlier run (--retry-failed runs them again)"
              if known else "")
    return (f"; this invocation ran {head.get('jobs_run', 0)} jobs and read {read} from run files finished "
            f"earlier{stale}, whose own costs are in the cost columns{failed}")


def _sig(x: float, digits: int) -> str:
    """Significant digits without exponents for large values (454, not 4.54e+02)."""
    return f"{x:.0f}" if abs(x) >= 10 ** digits else f"{x:.{digits}g}"


def markdown_table(table: dict) -> str:
    cols = table["columns"]
    time_col = "analysis_rmse" in cols
    head = ["method", "members", "seeds", "stationary"]
    for c in cols:
        head.append(label(c))
        if c == "analysis_rmse" and time_col:
            head.append("± time (AR1)")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:", "---"] + ["---:"] * (len(head) - 4)) + "|"]
    for row in table["rows"]:
        planned = row.get("seeds_planned")  # an interim table: seeds in of seeds to come
        seeds = str(row["seeds"]) + (f" of {planned}" if planned and planned != row["seeds"] else "")
        seeds += f" ({row['failed']} failed)" if row["failed"] else ""
        cells = [row["method"], str(row["members"] or "–"), seeds, _stationary_cell(row)]
        for c in cols:
            cells.append(_fmt(row[c], row.get(f"{c}_ci95"), c in COSTS))
            if c == "analysis_rmse" and time_col:
                half = row.get("analysis_rmse_time_ci95")
                cells.append(f"± {_sig(half, 2)}" if half is not None and math.isfinite(half) else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: The stationarity cell of a row whose windows were too short to test, and why (tune's search
#: table writes the same).
UNTESTABLE = "**no** (untestable)"
UNTESTABLE_WHY = ("the scored window holds fewer than 3 independent cycles (AR(1) effective sample size), "
                  "too few to show it stationary")


def _stationary_cell(row: dict) -> str:
    """'yes', 'no (k of n seeds trend)' or '–' when the windows were too short to test."""
    if row.get("stationary") is None:
        return "–"
    if row.get("stationary_reason") == "too few independent cycles to test":
        return UNTESTABLE
    flagged = row.get("nonstationary_seeds") or 0
    text = "yes" if row["stationary"] else "**no**"
    return text + (f" ({flagged}/{row['seeds']} seeds)" if flagged else "")


def table_notes(table: dict) -> str:
    """Lines under a table: stationarity, seeds and the tuned options applied."""
    notes = []
    trending = [r for r in table["rows"] if r.get("stationary") is False and r.get("stationary_reason") == "trend"]
    if trending:
        names = ", ".join(f"{r['method']} ({r['trend_relative_change']:+.0%} over the window)" for r in trending)
        notes.append(f"Not stationary: {names}. Their scored window still trends (log analysis RMSE against "
                     "cycle, AR(1)-corrected, seeds pooled, 5 % level): the mean depends on the window; "
                     "lengthen the burn-in or the run.")
    short = [r["method"] for r in table["rows"] if r.get("stationary") is False and r not in trending]
    if short:
        notes.append(f"Untestable: {', '.join(short)}: {UNTESTABLE_WHY}; lengthen the run.")
    if table.get("not_started"):
        notes.append(f"Not started yet (no finished seed): {', '.join(table['not_started'])}.")
    if table.get("scored_seeds") is not None:
        seeds = ", ".join(map(str, table["scored_seeds"]))
        tuning = ", ".join(map(str, table.get("tuning_seeds") or [])) or "none declared"
        notes.append(f"Scored seeds: {seeds}; tuning seeds: {tuning}.")
    tuned = [f"{r['method']} " + ", ".join(f"{k}={v}" for k, v in r["tuned"].items())
             for r in table["rows"] if r.get("tuned")]
    if tuned:
        notes.append("Tuned options applied: " + "; ".join(tuned) + ".")
    return "\n\n".join(notes)


def _p_text(p: dict, m: int) -> str:
    """', p = ...' for a pair: Holm-adjusted when the table reports m > 1 pairs."""
    value = p.get("p_holm") if m > 1 else p.get("p")
    if value is None or not math.isfinite(value):
        return ""
    return f", p{'(Holm)' if m > 1 else ''} {'< 0.001' if value < 0.001 else f'= {value:.2g}'}"


def paired_lines(table: dict) -> str:
    """The requested pairs as one line: 'a − b: mean ± half (n seeds)'; negative favours a."""
    m = len(table["pairs"])

    items = [f"{p['a']} − {p['b']}: {_fmt(p['analysis_rmse_diff'], p['analysis_rmse_diff_ci95'])} "
             f"({p['seeds']} seed{'s' if p['seeds'] != 1 else ''}{_p_text(p, m)})" for p in table["pairs"]]
    text = "Paired RMSE a differences (seed by seed, negative favours the first): " + "; ".join(items) + "."
    if m > 1:
        text += (f" With {m} pairs in this table, p-values are Holm-adjusted and the intervals are at the "
                 f"Bonferroni level 1 − 0.05/{m}, so that all {m} hold together with 95 % confidence.")
    verdict = verdict_line(table["pairs"])
    return text + (f" {verdict}" if verdict else "")


def _separation(p: dict, m: int = 1) -> tuple[str, str] | str:
    """(ahead, behind) where the pair's test rejects equality at 5 %: its p-value (Holm-adjusted
    when the family has m > 1 pairs), or without one its interval excluding 0; 'not separated'
    where it does not; '–' without a difference. Holm is the family's test; the Bonferroni-level
    intervals printed beside it are wider, so a pair Holm separates may show an interval that
    includes 0 (``_holm_only`` says so)."""
    diff, half = p.get("analysis_rmse_diff"), p.get("analysis_rmse_diff_ci95")
    if diff is None or not math.isfinite(diff):
        return "–"
    value = p.get("p_holm") if m > 1 else p.get("p")
    if value is not None and math.isfinite(value):
        separated = value < 0.05 and diff != 0
    elif half is not None and math.isfinite(half):
        separated = abs(diff) > half
    else:
        return "–"
    if not separated:
        return "not separated"
    return (p["a"], p["b"]) if diff < 0 else (p["b"], p["a"])


def _holm_only(p: dict, m: int) -> bool:
    """Of a pair the Holm test separates (``_separation`` gave a tuple): whether its
    Bonferroni-level interval still includes 0."""
    half = p.get("analysis_rmse_diff_ci95")
    return m > 1 and half is not None and math.isfinite(half) and abs(p["analysis_rmse_diff"]) <= half


def _reading(p: dict, m: int = 1) -> str:
    sep = _separation(p, m)
    if not isinstance(sep, tuple):
        return sep
    return f"{sep[0]} ahead" + (" (Holm; its Bonferroni interval includes 0)" if _holm_only(p, m) else "")


def pairs_overview(tables: list[dict]) -> str:
    """Every table's requested pairs in one table, so a suite's verdict (e.g. where a score
    method beats the tuned LETKF) reads at a glance; '' when no table has pairs."""
    lines = []
    for t in tables:
        m = len(t.get("pairs") or [])
        for p in t.get("pairs") or []:
            lines.append(f"| {t['name']} | {p['a']} − {p['b']} | {_fmt(p['analysis_rmse_diff'], p['analysis_rmse_diff_ci95'])} "
                         f"| {p['seeds']} | {_p_text(p, m).removeprefix(', ') or '–'} | {_reading(p, m)} |")
    if not lines:
        return ""
    return "\n".join(["## The pairs, table by table", "",
                       "Paired RMSE a differences (seed by seed; negative favours the first), each table's pairs "
                       "Holm-adjusted among themselves with Bonferroni-level intervals, as under each table below.", "",
                       "| table | pair | a − b | seeds | p | reading |", "|---|---|---:|---:|---|---|", *lines])


def verdict_line(pairs: list[dict]) -> str:
    """The pairs read out: which method is ahead where the family's test (Holm over the table's
    pairs; the plain p-value or the interval for one pair) rejects equality, and which pairs it
    does not separate, so that a reader need not check each sign, interval and p-value."""
    m = len(pairs)
    ahead, level = [], []
    for p in pairs:
        sep = _separation(p, m)
        if isinstance(sep, tuple):
            ahead.append(f"{sep[0]} ahead of {sep[1]}" + (" (Holm; its Bonferroni interval includes 0)"
                                                            if _holm_only(p, m) else ""))
        elif sep == "not separated":
            level.append(f"{p['a']} and {p['b']}")
    parts = ([", ".join(ahead)] if ahead else []) + (["not separated: " + ", ".join(level)] if level else [])
    return f"Read: {'; '.join(parts)}." if parts else ""


def equal_cost_lines(table: dict) -> str:
    """The cost-matched pairs as one line: for each requested method pair, the rows whose
    seconds per cycle are closest, their difference and both costs."""
    m = len(table["equal_cost_pairs"])

    def cost(p, side):
        calls = p.get(f"{side}_network_calls_per_cycle")
        forecasts = p[f"{side}_forecasts_per_cycle"]
        return (f"{_fmt(p[f'{side}_seconds_per_cycle'], cost=True)} s, {_fmt(forecasts, cost=True)} "
                f"forecast{'' if forecasts == 1 else 's'}" + (f", {_fmt(calls, cost=True)} net calls" if calls is not None and math.isfinite(calls) else ""))

    items = [f"{p['a']} − {p['b']}: {_fmt(p['analysis_rmse_diff'], p['analysis_rmse_diff_ci95'])} "
             f"({p['seeds']} seed{'s' if p['seeds'] != 1 else ''}{_p_text(p, m)}; per cycle {cost(p, 'a')} against {cost(p, 'b')})"
             for p in table["equal_cost_pairs"]]
    text = ("At equal cost (for each pair of methods, the rows whose seconds per cycle are closest; paired RMSE a "
            "difference, negative favours the first): " + "; ".join(items) + ".")
    if m > 1:
        text += f" Holm-adjusted over these {m} pairs, intervals at the Bonferroni level 1 − 0.05/{m}."
    return text


def table_title(table: dict) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in sorted(table["model_options"].items()))
    truth = ", ".join(f"{k}={v}" for k, v in sorted((table.get("truth_options") or {}).items()))
    # An imperfect-model twin says so in its title: its truth differs from the forecast model.
    twin = "".join([f", truth model {truth}" if truth else "",
                    f", model error {table['model_error']}" if table.get("model_error") else "",
                    f", forecasts bias-corrected from {table['forecast_bias']}" if table.get("forecast_bias") else ""])
    return (f"{table['model']}{f' ({opts})' if opts else ''}, obs {table['obs']}{twin}, "
            f"{table['cycles']} cycles ({table['burn_in']} burn-in)")


def cross_pairs_section(pairs: list[dict]) -> str:
    """The suite's pairs of rows from two tables that share truths and observations; '' when
    there are none."""
    if not pairs:
        return ""
    m = len(pairs)
    lines = [f"| {p['a']} | {p['b']} | {_fmt(p['analysis_rmse_diff'], p['analysis_rmse_diff_ci95'])} | {p['seeds']} "
             f"| {_p_text(p, m).removeprefix(', ') or '–'} | {_reading(p, m) if p['seeds'] else 'not run yet'} | {p.get('why', '')} |"
             for p in pairs]
    return "\n".join(["## Pairs across tables", "",
                       "Rows of two tables whose seeds share truths and observations, paired seed by seed (RMSE a "
                       "difference, negative favours a); Holm-adjusted among these pairs"
                       + (f", intervals at the Bonferroni level 1 − 0.05/{m}" if m > 1 else "") + ".", "",
                       "| a | b | a − b | seeds | p | reading | why |", "|---|---|---:|---:|---|---|---|", *lines])


def markdown_document(tables: list[dict], failed: list[dict], head: dict, cross_pairs: list[dict] = ()) -> str:
    interim = head.get("interim")
    parts = ["# da-harness comparison" + (" (interim)" if interim else ""), "",
             (f"**Interim: {interim}.** Rows short of seeds are not final, and a row's mean over the seeds it has "
              "is not comparable with another row's over other seeds; the paired columns pair only the seeds "
              "both rows have.") if interim else None, "" if interim else None,
             f"- command: `{head['command']}`" if head.get("command") else None,
             f"- suite: {head['suite']}" if head.get("suite") else None,
             f"- commit: {head['commit']}", f"- machine: {head['machine']}; {head['software']}"
             + (f"; methods trained and analysed on {head['device']} (truth and forecasts on the CPU)"
                if head.get("device", "cpu") != "cpu" else ""),
             (f"- read: {head['date']}, {head.get('jobs_read', 0)} finished run files"
              + (f" and {head['failures_read']} recorded failure(s)" if head.get("failures_read") else "")
              + " (nothing run or trained)" if interim else
              f"- run: {head['run_mode']}, {head['date']}, wall time {head['wall_seconds']:.0f} s (training included)"
              + _reuse_note(head)),
             "", "Mean over seeds ± half-width of the 95 % t-interval. RMSE a/b: analysis/background RMSE "
             "(area-weighted; the unsuffixed score of a multi-variable model is the RMS of the per-variable RMSEs "
             "normalised by their climatological std). spread/skill and CRPS (fair) for ensembles. O-B/O-A: rms "
             "observation-space departures. RMSE a − best (paired): this method's analysis RMSE minus that of the table's "
             "best method, seed by seed (both saw the same truth and observations), mean ± 95 % interval; an interval "
             "that excludes 0 separates the two even when their own intervals overlap. train s: the time the method's trained state took to train (recorded with the checkpoint, also when it was read from the cache); "
             "peak MB: peak resident memory of the process that ran the job (shared by the jobs of one worker). "
             "s/cycle: wall time per cycle; forecasts/cycle: model integrations of one member per cycle (the "
             "ensemble size); net calls/cycle: the latent methods' denoiser and decoder forward passes per cycle "
             "(each on the batch of members x samples); the -cost.png figure plots RMSE a against the first two. "
             "A method run at several settings in one table has one row per setting, named by the settings "
             "that differ. "
             "stationary: whether the scored windows show no trend in log analysis RMSE against cycle (per seed, "
             "slope error corrected for AR(1) autocorrelation; the seeds' p-values pooled by Fisher's method; 5 % "
             "level), with the seeds flagged one by one. ± time (AR1): the 95 % half-width of RMSE a that the finite "
             "scored windows alone explain (each run's time mean with an AR(1)-inflated standard error, as in DAPPER, "
             "the AR(1) fit pooled over the row's seeds). Each seed's own scores, to pair or check seed by seed, "
             "are in the table's -seeds.csv, its .nc (the *_by_seed variables) and the grid at the end of its .md.", ""]
    overview = pairs_overview(tables)
    if overview:
        parts += [overview, ""]
    if cross_pairs:
        parts += [cross_pairs_section(list(cross_pairs)), ""]
    for t in tables:
        parts += [f"## {table_title(t)}", "", markdown_table(t), ""]
        if t.get("pairs"):
            parts += [paired_lines(t), ""]
        if t.get("equal_cost_pairs"):
            parts += [equal_cost_lines(t), ""]
        if table_notes(t):
            parts += [table_notes(t), ""]
    if head.get("seconds_by_method"):
        parts += ["## What the suite cost, by method", "",
                  "CPU-bound runs on one thread each: seconds of the runs themselves (setup, prepare and "
                  "cycles, as each run file records them) and of training, once per trained state.", "",
                  "| method | runs | run s | train s | total s |", "|---|---:|---:|---:|---:|"]
        rows = sorted(head["seconds_by_method"].items(), key=lambda kv: -(kv[1]["run_seconds"] + kv[1]["train_seconds"]))
        parts += [f"| {m} | {c['runs']} | {c['run_seconds']:.0f} | {c['train_seconds']:.0f} | "
                  f"{c['run_seconds'] + c['train_seconds']:.0f} |" for m, c in rows]
        parts += [""]
    if failed:
        parts += ["## Failed jobs", ""]
        parts += [f"- {r['job']['method']} on {r['job']['model']} ({r['job']['obs']}, seed {r['job']['seed']}): "
                  f"{r['error']}" for r in failed]
    return "\n".join(p for p in parts if p is not None).strip()


def write_csv(table: dict, path: Path) -> None:
    cols = table["columns"]
    fields = (["model", "obs", "method", "members", "seeds", "failed", "stationary", "nonstationary_seeds", "trend_p",
               "analysis_rmse_time_ci95"] + [x for c in cols for x in (c, f"{c}_ci95")])
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in table["rows"]:
            writer.writerow({"model": table["model"], "obs": table["obs"],
                             **{k: seed_scores.csv_cell(v) for k, v in row.items() if k in fields}})


def write_netcdf(table: dict, path: Path, head: dict) -> None:
    import numpy as np
    import xarray as xr

    from .io import write_atomic

    rows = table["rows"]
    data: dict[str, Any] = {
        "seeds": ("method", np.array([r["seeds"] for r in rows]), {"long_name": "seeds that completed"}),
        "members": ("method", np.array([r["members"] or 0 for r in rows]), {"long_name": "ensemble size"}),
    }
    for c in table["columns"]:
        data[c] = ("method", np.array([r[c] for r in rows], dtype=float), {"long_name": f"{c}, mean over seeds"})
        data[f"{c}_ci95"] = ("method", np.array([r[f"{c}_ci95"] for r in rows], dtype=float),
                             {"long_name": f"half-width of the 95% Student-t interval of {c}"})
    attrs = {"title": table_title(table), "model": table["model"], "obs": table["obs"],
             "model_options": json.dumps(table["model_options"]), "cycles": table["cycles"],
             "best_method": next((r["best"] for r in rows if "best" in r), ""),
             "burn_in": table["burn_in"] if table["burn_in"] is not None else -1,
             **{k: str(v) for k, v in head.items()}}
    seeds, by_seed = seed_scores.netcdf_variables(table)
    data.update(by_seed)
    coords = {"method": ("method", np.array([r["method"] for r in rows], dtype=object)),
              "seed": ("seed", np.array(seeds, dtype=np.int64), {"long_name": "scored seed"})}
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    write_atomic(ds, path)


def write_all(tables: list[dict], records: list[dict], out: Path, head: dict, plots: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for t in tables:
        stem = str(out / t["name"])  # names hold dots (random:0.05): no with_suffix
        pairs = f"\n{paired_lines(t)}\n" if t.get("pairs") else ""
        pairs += f"\n{equal_cost_lines(t)}\n" if t.get("equal_cost_pairs") else ""
        notes = f"\n{table_notes(t)}\n" if table_notes(t) else ""
        grid = f"\n{by_seed}\n" if (by_seed := seed_scores.markdown(t)) else ""
        (md := Path(f"{stem}.md")).write_text(f"## {table_title(t)}\n\n{markdown_table(t)}\n{pairs}{notes}{grid}")
        write_csv(t, csv_path := Path(f"{stem}.csv"))
        seed_scores.write_csv(t, seeds_csv := Path(f"{stem}-seeds.csv"))
        write_netcdf(t, nc := Path(f"{stem}.nc"), head)
        files += [md, csv_path, seeds_csv, nc]
        if plots:
            runs = seed_runs(t, records)
            if runs:
                files.append(plot_rmse(runs, t, Path(f"{stem}-rmse.png")))
                # Maps need fields: slim copies restored from an archive have none.
                full = {m: {k: f for k, f in s.items() if has_fields(f)} for m, s in runs.items()}
                full = {m: s for m, s in full.items() if s}
                if full:
                    files.append(plot_maps(full, t, Path(f"{stem}-maps.png")))
            if "analysis_rmse" in t["columns"] and t["rows"]:
                files.append(plot_cost(t, Path(f"{stem}-cost.png")))
    return files


# --- plots (drawn by interfaces.plots) -----------------------------------------------------
def seed_runs(table: dict, records: list[dict]) -> dict[str, dict[int, Path]]:
    """{row: {seed: run file}} of the completed jobs of the table, seeds in order (a row is the
    method, or the method and its settings where the table runs it several ways)."""
    runs: dict[str, dict[int, Path]] = {}
    for r in records:
        job = r["job"]
        if r["status"] == "failed" or group_name(job) != table["name"] or not Path(r["file"]).exists():
            continue
        runs.setdefault(r.get("row", job["method"]), {})[job["seed"]] = Path(r["file"])
    return {m: dict(sorted(by_seed.items())) for m, by_seed in runs.items()}


def map_seed_runs(runs: dict[str, dict[int, Path]]) -> tuple[dict[str, Path], str]:
    """One run file per method for the maps: the lowest seed every method completed (so all rows
    share one truth), else each method's lowest seed; and the words saying which."""
    common = set.intersection(*(set(s) for s in runs.values()))
    if common:
        seed = min(common)
        return {m: s[seed] for m, s in runs.items()}, f"seed {seed}"
    return {m: next(iter(s.values())) for m, s in runs.items()}, "each method's first seed"


def table_colours(table: dict, methods=()) -> dict:
    """Each row's colour, the same in all of the table's figures: by the row's place in the
    table, then (for a table without rows) by the order of ``methods``."""
    from . import plots

    return plots.row_colours([r["method"] for r in table.get("rows", ())] + list(methods))


def plot_rmse(runs: dict[str, dict[int, Path]], table: dict, path: Path) -> Path:
    """Analysis and background RMSE against cycle: mean over seeds, min-max band, per variable."""
    from . import plots

    plots.compare_rmse({m: list(s.values()) for m, s in runs.items()}, out=path, burn_in=table.get("burn_in"),
                       title=f"{table_title(table)}: RMSE per cycle", colours=table_colours(table, runs))
    return path


def plot_cost(table: dict, path: Path) -> Path:
    """Analysis RMSE against seconds and forecasts per cycle, one point per row."""
    from . import plots

    plots.compare_cost(table["rows"], out=path, title=f"{table_title(table)}: accuracy against cost",
                       colours=table_colours(table))
    return path


def plot_maps(runs: dict[str, dict[int, Path]], table: dict, path: Path, cycle: int = -1) -> Path:
    """Truth, observations, and each method's analysis and error at one cycle (the first
    variable), on colour scales shared by the methods."""
    from . import plots

    chosen, which = map_seed_runs(runs)
    fig = plots.compare_maps(chosen, cycle=cycle)
    fig.suptitle(f"{table_title(table)}: {fig.get_suptitle()}, {which}", fontsize=10)
    fig.savefig(path, dpi=90)
    return path
