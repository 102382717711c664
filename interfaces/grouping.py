"""Which table a job belongs to: one table per (model, model options, observations).

Shared by the comparison engine (which groups records) and the report (which finds a table's
run files), so that neither imports the other.
"""

from __future__ import annotations

import json
import re


def group_key(job: dict) -> tuple:
    return (job["model"], json.dumps(job["model_options"], sort_keys=True), job["obs"], *_truth(job))


def _truth(job: dict) -> tuple:
    """An imperfect-model twin's truth options and model error: their own table (absent, as in
    jobs of a perfect-model twin, they leave keys and names as they were)."""
    out = ()
    if job.get("truth_options"):
        out += ("truth-" + "-".join(f"{k}{v}" for k, v in sorted(job["truth_options"].items())),)
    if job.get("model_error"):
        out += ("error-" + job["model_error"],)
    if job.get("forecast_bias"):
        out += ("fbias-" + job["forecast_bias"],)
    return out


def group_name(job: dict) -> str:
    """A file-name stem for a table: model, model option values, obs (e.g. sw-32x64-random0.05)."""
    parts = [job["model"], *(str(v) for _, v in sorted(job["model_options"].items())), job["obs"], *_truth(job)]
    return "-".join(re.sub(r"[^A-Za-z0-9.]+", "", p) for p in parts if p)
