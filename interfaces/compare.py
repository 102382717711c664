"""The comparison engine: many runs (methods x seeds x settings), aggregated into one table per
(model, observations).

Every method of a table sees the same truth and observations per seed, because the harness
derives them from (seed, model, obs) alone. Suites and options become jobs in interfaces.suites;
jobs run through interfaces.sweep (serially or on Dask); interfaces.aggregate makes the tables
and interfaces.report writes them with their plots. This module holds the command line and the
run from jobs to written tables (final, or interim from the runs finished so far).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from .aggregate import aggregate, by_table, cross_table_pairs, label_rows, seconds_by_method
from .errors import UsageError
from .grouping import group_name
from .suites import build_jobs, cross_pairs, load_suite, pair_method, parse_pairs


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
                   help="also report the seed-by-seed RMSE difference A - B for these method pairs (default: the suite's); "
                        "'A*:B' pairs every row of A (its variants too) with B")
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    p.add_argument("--serial", action="store_true", help="run the jobs one after another in this process")
    p.add_argument("--out", default=None, help="output folder (default runs/compare-<suite or model>)")
    p.add_argument("--cache-dir", default=None, help="where climatologies and checkpoints are cached")
    p.add_argument("--no-progress", action="store_true",
                   help="no line per finished job on stderr (warm-up, training and failures are still said)")
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


def cmd_compare(args, registry) -> int:
    t0 = time.perf_counter()
    suite = load_suite(args.suite) if args.suite else None
    protocol: dict = {}
    jobs = build_jobs(args, suite, registry, protocol)
    compared = {j["method"] for j in jobs}
    if args.pairs is not None:
        pairs = parse_pairs(args.pairs, compared)
    else:  # a suite's pairs, less those that a --methods filter left without both methods
        pairs = [p for p in parse_pairs((suite or {}).get("pairs", []), None)
                 if {pair_method(name) for name in p} <= compared]
    crossed = cross_pairs(suite, jobs)  # checked before anything runs
    out = Path(args.out or f"runs/compare-{suite['name'] if suite else (args.model or 'lorenz96')}")
    if args.plan and args.finished:
        raise UsageError("--plan and --finished are two views of a sweep: give one")
    if args.finished:
        result = report_finished(jobs, out, registry, plots=not args.no_plots, suite=suite,
                                 command=_command_line(), pairs=pairs, protocol=protocol, crossed=crossed)
        print(json.dumps(_clean(result["json"]), default=str) if args.json else result["markdown"])
        return 0
    if args.plan:
        from .plan import format_plan, plan_json

        _, rows = _plan(jobs, out / "runs", registry, protocol)
        print(plan_json(rows) if args.json else format_plan(rows, out / "runs"))
        return 0
    result = compare(jobs, out, registry, serial=args.serial, workers=args.workers, scheduler=args.scheduler,
                     cache_dir=args.cache_dir, plots=not args.no_plots, started=t0, suite=suite,
                     command=_command_line(), pairs=pairs, protocol=protocol, retry_failed=args.retry_failed,
                     progress=not args.no_progress, crossed=crossed)
    if args.json:
        print(json.dumps(_clean(result["json"]), default=str))
    else:
        print(result["markdown"])
    return 1 if result["failed"] else 0


def _command_line() -> str:
    """The command as typed, when da-harness was started from a shell."""
    import shlex

    if Path(sys.argv[0]).name in ("da-harness", "cli.py", "run_suite.py"):
        return shlex.join(["da-harness", *sys.argv[1:]]) if Path(sys.argv[0]).name != "run_suite.py" else shlex.join(["python", *sys.argv])
    return "da-harness compare (called from Python)"


# --- running and aggregating ----------------------------------------------------------------
def compare(jobs: list[dict], out: Path, registry, *, serial=False, workers=2, scheduler=None, cache_dir=None,
            plots=True, started=None, suite=None, log=None, command="", pairs=(), protocol=None,
            retry_failed=False, progress=True, crossed=()) -> dict[str, Any]:
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
                             scheduler=scheduler, cache_dir=cache_dir, registry=registry if serial else None,
                             log=log, progress=progress, retry_failed=retry_failed,
                             priority=cheap_rows_first(jobs, out / "runs", registry, protocol))
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
    markdown, summary = _write_documents(out, tables, failed, header, files,
                                         cross_pairs=cross_table_pairs(records, list(crossed)))
    return {"tables": tables, "failed": failed, "markdown": markdown, "json": summary, "records": records}


def report_finished(jobs: list[dict], out: Path, registry, *, plots=True, suite=None, command="", pairs=(),
                    protocol=None, crossed=()) -> dict[str, Any]:
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
        label_rows(recs, protocol)
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
    if len(finished) == len(records):  # nothing owed: the same command without --finished is final
        head["interim"] += ("; every run is finished, so the same command without --finished writes the final "
                            "tables (it reads the runs back and runs nothing)")
    head["jobs_read"] = sum(r["status"] == "skipped" for r in finished)
    head["failures_read"] = len(finished) - head["jobs_read"]
    head["seconds_by_method"] = seconds_by_method(finished)
    files = report.write_all(tables, finished, out / "interim", head, plots=plots)
    markdown, summary = _write_documents(out / "interim", tables, [r for r in finished if r["status"] == "failed"],
                                         head, files, cross_pairs=cross_table_pairs(finished, list(crossed)),
                                         owed=[{"job": r["job"], "file": r["file"]} for r in records if r["status"] == "owed"])
    return {"tables": tables, "markdown": markdown, "json": summary, "records": records}


def _plan(jobs: list[dict], run_dir: Path, registry, protocol: dict | None) -> tuple[list[dict], list[dict]]:
    """compare --plan's view of ``jobs``: their records ({"job", "row"}, rows labelled as the
    tables will label them) and interfaces/plan.py's rows (seeds done, part-way, cost estimate)."""
    from .plan import plan_rows

    records = [{"job": j} for j in jobs]
    for recs in by_table(records).values():
        label_rows(recs, protocol)
    tuning_cost = {h: c for info in (protocol or {}).values() for h, c in info.get("tuning_cost", {}).items()}
    return records, plan_rows(records, run_dir, registry, tuning_cost)


def cheap_rows_first(jobs: list[dict], run_dir: Path, registry, protocol: dict | None):
    """A sort key for the jobs still to run: part-way runs first (most of their cost is spent),
    then rows by their estimated seconds per cycle (compare --plan's: the row's finished runs,
    else its part-way runs, else its tuning runs), rows without an estimate last; the suite's
    order breaks ties. A long sweep cut short then leaves whole cheap rows rather than a few
    seeds of every row."""
    from .sweep import job_hash

    records, plan = _plan(jobs, run_dir, registry, protocol)
    rows = {(r["table"], r["row"]): r for r in plan}
    key = {}
    for r in records:
        row = rows[(group_name(r["job"]), r["row"])]
        cost = row["seconds_per_cycle"]
        key[job_hash(r["job"])] = (0 if r["job"]["seed"] in row["partial"] else 1,
                                   cost if cost is not None else float("inf"))
    return lambda job: key.get(job_hash(job), (1, float("inf")))


def _write_documents(folder: Path, tables: list[dict], failed: list[dict], head: dict, files: list[Path],
                     **extra) -> tuple[str, dict]:
    """results.md and summary.json in ``folder`` (beside the per-table files ``files``); returns
    the markdown and the summary."""
    from . import report

    markdown = report.markdown_document(tables, failed, head, extra.get("cross_pairs") or [])
    (folder / "results.md").write_text(markdown + "\n")
    summary = {"header": head, "tables": tables, "failed": [{k: r[k] for k in ("job", "error", "file")} for r in failed],
               **extra, "files": [str(f) for f in files + [folder / "results.md"]]}
    (folder / "summary.json").write_text(json.dumps(_clean(summary), indent=1, default=str))
    return markdown, summary


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
