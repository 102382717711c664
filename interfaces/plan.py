"""Where a sweep stands, without running anything (`da-harness compare --plan`).

A suite on the sphere takes CPU-hours and is finished over several sittings (compare skips the
jobs whose run file is complete and made by the current code). Before starting or resuming one,
a user wants to know, per table and row, how many seeds are done, which run is part-way (and at
which cycle) and which are still to run, and roughly what is left to spend: the seconds per
cycle of a row's finished runs times the cycles it still owes. A row with no finished run is
estimated from its part-way runs (the wall time each recorded per cycle so far), else from its
tuning runs (the chosen setting's seconds per cycle, from the tuned file), marked as such; a row
with none of these (a variant row no search ran, before its first cycles) has no estimate, and
the total says so rather than guessing.
"""

from __future__ import annotations

import json
import math
from typing import Any

from . import failures
from .grouping import group_name
from .sweep import attrs_state, is_running, job_code_version, job_hash, read_run, run_path


#: How format_plan marks an estimate not taken from the row's finished scoring runs.
MARKS = {"part-way runs": "+", "tuning runs": "*"}


def plan_rows(records: list[dict], run_dir, registry=None, tuning_cost: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """One entry per (table, row) of ``records`` ({"job", "row"} each, rows labelled as the
    tables will label them), in the order the jobs come: seeds done, partial runs with their
    cycle, seeds failed as recorded by an earlier run (finished: a rerun reads the failure back),
    seeds to run (missing, or made by other code: 'stale'), the seeds a sweep is running now
    (``running``: their run lock is held, by this or another process), and an estimate of the
    seconds still to spend: from the row's finished runs, else from its part-way runs' recorded
    cycles, else from ``tuning_cost`` ({job hash: seconds per cycle of its tuning runs};
    ``estimated_from`` says which), else None."""
    tuning_cost = tuning_cost or {}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        job = r["job"]
        key = (group_name(job), r["row"])
        row = rows.setdefault(key, {"table": key[0], "row": key[1], "seeds": 0, "done": [], "failed": [], "partial": {},
                                    "to_run": [], "stale": [], "running": [], "seconds_per_cycle": [], "partial_seconds": [],
                                    "cycles": job["cycles"],
                                    "cycles_owed": 0, "tuning_cost": tuning_cost.get(job_hash(job))})
        row["seeds"] += 1
        # One read of the file: its state, and for a partial run its cycles written and their times.
        path, code = run_path(run_dir, job), job_code_version(job, registry)
        attrs, measured = _attrs_and_seconds(path)
        status, summary, _ = attrs_state(attrs, code) if attrs else ("missing", None, "")
        seed = job["seed"]
        if status == "complete":
            row["done"].append(seed)
            if summary and summary.get("seconds_per_cycle"):
                row["seconds_per_cycle"].append(float(summary["seconds_per_cycle"]))
            continue
        if failures.read(path, code):
            row["failed"].append(seed)
            continue
        if is_running(path):
            row["running"].append(seed)
        if status == "partial":
            done = int(attrs.get("completed_cycles", 0))
            row["partial"][seed] = done
            if measured is not None:
                row["partial_seconds"].append(measured)
            row["cycles_owed"] += max(int(job["cycles"]) - done, 0)
            continue
        (row["stale"] if status == "stale" else row["to_run"]).append(seed)
        row["cycles_owed"] += int(job["cycles"])
    out = []
    for row in rows.values():
        tuning = row.pop("tuning_cost")
        sources = (("scoring runs", row.pop("seconds_per_cycle")), ("part-way runs", row.pop("partial_seconds")),
                   ("tuning runs", [tuning] if tuning else []))
        row["estimated_from"], mean = next(((name, sum(v) / len(v)) for name, v in sources if v), (None, None))
        row["seconds_per_cycle"] = mean
        row["seconds_left"] = (0.0 if row["cycles_owed"] == 0 else
                               (mean * row["cycles_owed"] if mean is not None else None))
        out.append(row)
    return out


def _attrs_and_seconds(path) -> tuple[dict[str, Any] | None, float | None]:
    """A run file's attributes (None when it is missing or unreadable, as ``read_attrs``) and, for
    a file not complete, the mean wall time per cycle it recorded so far (its 'seconds' variable;
    None when it has none), from one opening of the file."""
    def seconds(ds) -> float | None:
        if ds.attrs.get("status") == "complete" or "seconds" not in ds or ds["seconds"].size == 0:
            return None
        try:
            value = float(ds["seconds"].mean())
        except Exception:  # noqa: BLE001 - unreadable times just give no estimate
            return None
        return value if math.isfinite(value) and value > 0 else None

    return read_run(path, lambda ds: (dict(ds.attrs), seconds(ds))) or (None, None)


def format_plan(rows: list[dict[str, Any]], run_dir) -> str:
    """The plan as text: a block per table, a line per row, and the totals."""
    lines = [f"compare --plan: run files in {run_dir} (nothing is run)"]
    table = None
    for row in rows:
        if row["table"] != table:
            table = row["table"]
            lines += ["", f"{table}:", f"  {'done':>7}  {'to run':>6}  {'seconds left':>13}  {'part-way (seed: cycle)':<22}  row"]
        partial = ", ".join([f"{s}: {c}/{row['cycles']}" + (" running" if s in row["running"] else "")
                             for s, c in row["partial"].items()]
                            + [f"{s}: running" for s in row["running"] if s not in row["partial"]]) or "-"
        left = row["seconds_left"]
        left_text = "-" if left == 0 else ("unknown" if left is None else f"~{left:,.0f}"
                                            + MARKS.get(row["estimated_from"], " "))
        to_run = len(row["to_run"]) + len(row["stale"])
        stale = f" (of which {len(row['stale'])} made by other code)" if row["stale"] else ""
        failed = (f"; {len(row['failed'])} failed (seed {', '.join(map(str, row['failed']))}), as recorded"
                  if row["failed"] else "")
        done = len(row["done"]) + len(row["failed"])
        lines.append(f"  {done:>3}/{row['seeds']:<3}  {to_run:>6}  {left_text:>13}  {partial:<22}  {row['row']}{stale}{failed}")
    done = sum(len(r["done"]) + len(r["failed"]) for r in rows)
    total = sum(r["seeds"] for r in rows)
    known = sum(r["seconds_left"] or 0.0 for r in rows)
    unknown = sum(r["seconds_left"] is None for r in rows)
    running = sum(len(r.get("running", [])) for r in rows)
    lines += ["", f"{done} of {total} runs done{f' ({running} running now)' if running else ''}; about {known:,.0f} seconds of runs left in the rows with an estimate"
              + (f", and {unknown} row(s) with none ('unknown')" if unknown else "")
              + "; seconds per cycle as the row's finished runs measured them (+ as its part-way runs have so "
                "far, * as its tuning runs did, none having finished), one worker each: divide by --workers "
                "for wall time"]
    return "\n".join(lines)


def plan_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps({"rows": rows}, default=str)
