"""Tuned-option files: what `da-harness tune` chose, with the whole search that chose it.

One TOML file holds many entries, one per (table, method, ensemble size); a suite block that
says ``tuned = "benchmarks/tuned/full.toml"`` has compare apply each entry's chosen options to
the matching rows. An entry records the tuning seeds, so compare can refuse to score on them.

    [[entry]]
    table = "sw-32x64-random0.05"     # interfaces.grouping.group_name of the jobs
    method = "dps"
    chosen = { zeta = 3.0, steps = 20 }
    seeds = [100, 101]
    ...
    [[entry.search]]                  # every setting tried, in the order tried
    options = { zeta = 0.5, steps = 10 }
    score = 0.162
    ...
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .errors import UsageError

ROOT = Path(__file__).resolve().parent.parent


def resolve_path(name: str) -> Path:
    """A tuned file named in a suite: as given (absolute or from the working directory), else
    from the repository root (suites are run from anywhere)."""
    path = Path(name)
    if path.is_absolute() or path.exists():
        return path
    return ROOT / path


def read(path) -> list[dict[str, Any]]:
    import tomllib

    path = Path(path)
    if not path.exists():
        raise UsageError(f"tuned-options file '{path}' does not exist (write it with `da-harness tune --out {path}`)")
    try:
        data = tomllib.loads(path.read_text())
    except ValueError as exc:
        raise UsageError(f"tuned-options file '{path}' is not valid TOML: {exc}") from None
    entries = data.get("entry", [])
    for i, e in enumerate(entries):
        missing = [k for k in ("table", "method", "chosen", "seeds") if k not in e]
        if missing:
            raise UsageError(f"tuned-options file '{path}': entry {i + 1} lacks {', '.join(missing)}")
    return entries


def find(entries: list[dict], table: str, method: str, members: int | None = None) -> dict | None:
    """The entry for (table, method) that applies at ``members``: one tuned at that ensemble
    size, else one tuned without a size (a method whose options do not depend on it), else any
    entry for the pair (tuned at another size: the caller decides), else None."""
    mine = [e for e in entries if e["table"] == table and e["method"] == method]
    if members is not None:
        for e in mine:
            if tuned_size(e) == int(members):
                return e
    for e in mine:
        if tuned_size(e) is None:
            return e
    return mine[0] if mine else None


def tuned_size(entry: dict) -> int | None:
    """The ensemble size an entry was tuned at; None for one tuned without a size."""
    return None if entry.get("members") is None else int(entry["members"])


def at_other_size(entry: dict, members: int | None) -> bool:
    """Whether ``entry`` was tuned at a size other than ``members`` (both known): it does not apply."""
    return members is not None and tuned_size(entry) not in (None, int(members))


def _same_key(a: dict, b: dict) -> bool:
    """One entry per (table, method, ensemble size): a method tuned at 20 and at 6 members has two."""
    return a["table"] == b["table"] and a["method"] == b["method"] and tuned_size(a) == tuned_size(b)


def seconds_per_cycle(entry: dict | None) -> float | None:
    """The chosen setting's cycling seconds per cycle in its tuning runs (one worker each), or
    None when the entry or its search does not record them."""
    if not entry:
        return None
    for s in entry.get("search", []):
        if s.get("options") == entry["chosen"] and s.get("run_seconds") and s.get("seeds") and entry.get("cycles"):
            return float(s["run_seconds"]) / (int(s["seeds"]) * int(entry["cycles"]))
    return None


# Who ran a search and when ('rescored': when a search read back whole was scored anew); a
# rerun that only reads the same search back changes nothing else.
PROVENANCE_KEYS = ("commit", "date", "wall_seconds", "rescored")


def upsert(path, entry: dict[str, Any], keep_provenance: bool = False) -> bool:
    """Write ``entry`` into the file, replacing the one for the same table, method and ensemble
    size; returns False, writing nothing, when that entry already says the same apart from its
    provenance (a rerun that read every run back keeps the record of the invocation that
    computed them). With ``keep_provenance`` (the search ran nothing now) a changed entry keeps
    the old one's commit, date and wall time, and records this invocation's in 'rescored'."""
    import tomllib

    path = Path(path)
    entries = read(path) if path.exists() else []
    at = next((i for i, e in enumerate(entries) if _same_key(e, entry)), None)
    if at is not None:
        old = entries[at]
        if keep_provenance and all(k in old for k in ("commit", "date")):
            entry = {**entry, "rescored": f"{entry.get('date')} at {entry.get('commit')}",
                     **{k: old[k] for k in PROVENANCE_KEYS if k in old and k != "rescored"}}
        # Compared as the file would write them (floats, None and NaN scores alike).
        new = tomllib.loads(dumps([entry]))["entry"][0]
        if dumps([_without_provenance(old)]) == dumps([_without_provenance(new)]):
            return False
        # In the old entry's place (a file's order, and its diffs, stay stable); any other entry
        # with the same key (a hand-edited file) goes.
        entries = [entry if i == at else e for i, e in enumerate(entries) if i == at or not _same_key(e, entry)]
    else:
        entries.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(entries))
    tmp.replace(path)
    return True


def _without_provenance(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k not in PROVENANCE_KEYS}


# --- a small TOML writer for this layout (scalars, lists of scalars, inline tables) -----------
def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items() if x is not None) + " }" if v else "{}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _value(str(k))


def dumps(entries: list[dict]) -> str:
    lines = ["# Written by `da-harness tune`: chosen options and the search that chose them.",
             "# A suite block applies them with tuned = \"<this file>\" (see interfaces/tuned.py).", ""]
    for e in entries:
        lines.append("[[entry]]")
        lines += [f"{_key(k)} = {_value(v)}" for k, v in e.items() if k != "search" and v is not None]
        for s in e.get("search", []):
            lines += ["", "[[entry.search]]"]
            lines += [f"{_key(k)} = {_value(v)}" for k, v in s.items() if v is not None]
        lines.append("")
    return "\n".join(lines)
