"""Each scored seed's figures behind a table's means: a reader can redo a paired difference seed
by seed, see which seed flagged a trend, or spot the one seed that carries a mean.

A table row (interfaces.aggregate) keeps them as ``row["per_seed"]``: one entry per completed
seed, in seed order, with the seed's time mean of each per-seed score (its analysis RMSE and
per-variable RMSE, background RMSE, spread-skill) over the scored window, and that window's trend
test (``trend_p``; ``stationary`` is whether p >= statistics.ALPHA, None where the run's per-cycle
scores were not read or too short to test). Written beside the table as ``<table>-seeds.csv``, as
an ``analysis_rmse_by_seed`` (method, seed) variable of its netCDF, and as a grid in its markdown.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from . import statistics

#: The per-seed scores kept: a run summary's time means that a reader pairs seed by seed.
KEPT = ("analysis_rmse", "background_rmse", "spread_skill")


def kept_columns(columns: list[str]) -> list[str]:
    """The table's columns that are kept per seed: analysis RMSE and its per-variable parts,
    background RMSE, spread-skill (costs and diagnostics are left to the row means)."""
    return [c for c in columns if c in KEPT or c.startswith("analysis_rmse_")]


def of_records(recs: list[dict], columns: list[str]) -> list[dict[str, Any]]:
    """The per-seed entries of one row from its records (failed ones left out), in seed order."""
    out = []
    for r in sorted((r for r in recs if r["status"] != "failed"), key=lambda r: r["job"]["seed"]):
        entry: dict[str, Any] = {"seed": r["job"]["seed"]}
        entry.update({c: float(r["summary"].get(c, math.nan)) for c in columns})
        p = statistics.trend_test(r["series"])["p"] if r.get("series") is not None else math.nan
        entry["trend_p"] = p
        entry["stationary"] = bool(p >= statistics.ALPHA) if math.isfinite(p) else None
        out.append(entry)
    return out


def seeds(table: dict) -> list[int]:
    """Every seed that some row of the table completed, in order."""
    return sorted({e["seed"] for row in table["rows"] for e in row.get("per_seed", ())})


def csv_cell(value: Any) -> Any:
    """A value as the tables' CSV files write it: an empty cell for a missing (NaN) or infinite
    float, so that spreadsheets and pandas read a gap rather than the string 'nan'."""
    return "" if isinstance(value, float) and not math.isfinite(value) else value


def write_csv(table: dict, path: Path) -> None:
    """One line per (row, seed): the table's model and obs, the row, the seed and its scores."""
    columns = kept_columns(table["columns"])
    fields = ["model", "obs", "method", "seed", *columns, "trend_p", "stationary"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in table["rows"]:
            for e in row.get("per_seed", ()):
                writer.writerow({"model": table["model"], "obs": table["obs"], "method": row["method"],
                                 **{k: csv_cell(v) for k, v in e.items() if k in fields}})


def netcdf_variables(table: dict) -> tuple[list[int], dict]:
    """The seed coordinate and (method, seed) variables of every kept score, NaN where a row has
    no completed run of a seed."""
    import numpy as np

    order = seeds(table)
    where = {s: i for i, s in enumerate(order)}
    data = {}
    for c in kept_columns(table["columns"]):
        grid = np.full((len(table["rows"]), len(order)), np.nan)
        for i, row in enumerate(table["rows"]):
            for e in row.get("per_seed", ()):
                grid[i, where[e["seed"]]] = e[c]
        data[f"{c}_by_seed"] = (("method", "seed"), grid,
                                {"long_name": f"{c}, time mean over the scored window of each seed"})
    return order, data


def markdown(table: dict, column: str = "analysis_rmse") -> str:
    """A grid of one score, a row per table row and a column per seed; '*' marks a seed whose
    window trends (p < ALPHA). Empty when no row has per-seed scores of ``column``."""
    order = seeds(table)
    if not order or column not in kept_columns(table["columns"]):
        return ""
    lines = [f"Per seed ({column.replace('_', ' ')}, time mean of each seed's scored window; * a window "
             f"that trends, p < {statistics.ALPHA:g}):", "",
             "| method | " + " | ".join(str(s) for s in order) + " |",
             "|---|" + "---:|" * len(order)]
    for row in table["rows"]:
        by_seed = {e["seed"]: e for e in row.get("per_seed", ())}
        cells = []
        for s in order:
            e = by_seed.get(s)
            if e is None or not math.isfinite(e[column]):
                cells.append("–")
            else:
                cells.append(f"{e[column]:.3g}" + ("*" if e["stationary"] is False else ""))
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
